-- model_efficiency: what each provider/model costs per request and per 1,000 tokens, over
-- everything the daily rollup holds (add WHERE day >= ... on rollup_labels yourself for a window).
--
-- total_tokens = input + output (input already includes cached tokens, output reasoning tokens).
-- cost_per_request divides by the priced requests only (requests - unpriced): an unpriced
-- request has no cost, not a cost of 0. cost_per_1k_tokens uses rollup rows without unpriced
-- requests only, for the same reason. Both are NULL when nothing was priced.
CREATE OR REPLACE VIEW model_efficiency AS
SELECT
    provider,
    model,
    sum(requests)::BIGINT                                               AS requests,
    sum(unpriced)::BIGINT                                               AS unpriced,
    sum(cost_usd)                                                       AS cost_usd,
    sum(input_tokens)::BIGINT                                           AS input_tokens,
    sum(output_tokens)::BIGINT                                          AS output_tokens,
    sum(input_tokens + output_tokens)::BIGINT                           AS total_tokens,
    sum(cost_usd) / nullif(sum(requests) - sum(unpriced), 0)            AS cost_per_request,
    1000 * sum(cost_usd) FILTER (WHERE unpriced = 0)
         / nullif(sum(input_tokens + output_tokens) FILTER (WHERE unpriced = 0), 0)
                                                                        AS cost_per_1k_tokens,
    sum(latency_ms_sum) / nullif(sum(latency_count), 0)                 AS avg_latency_ms
FROM rollup_labels
GROUP BY provider, model
ORDER BY cost_usd DESC, provider, model;
