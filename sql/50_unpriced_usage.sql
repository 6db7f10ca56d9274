-- unpriced_usage: models with usage but no price (cost_source = 'unpriced', cost_usd NULL),
-- per provider/model: how many requests and tokens, first and last seen. Add the model to the
-- catalog (spendlake pricing import) or an override, then spendlake reprice those days.
CREATE OR REPLACE VIEW unpriced_usage AS
SELECT
    provider,
    model,
    count(*)::BIGINT                            AS requests,
    sum(input_tokens)::BIGINT                   AS input_tokens,
    sum(output_tokens)::BIGINT                  AS output_tokens,
    sum(input_tokens + output_tokens)::BIGINT   AS total_tokens,
    min(time)                                   AS first_seen,
    max(time)                                   AS last_seen
FROM request_log
WHERE cost_source = 'unpriced'
GROUP BY provider, model
ORDER BY requests DESC, provider, model;
