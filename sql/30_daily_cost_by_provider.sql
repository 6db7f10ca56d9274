-- daily_cost_by_provider: spend per UTC day and provider, from the published daily rollup
-- (deduplicated: an event_id counts once).
-- unpriced counts requests with no known price; their cost is not in cost_usd.
CREATE OR REPLACE VIEW daily_cost_by_provider AS
SELECT
    day,
    provider,
    sum(requests)::BIGINT                       AS requests,
    sum(unpriced)::BIGINT                       AS unpriced,
    sum(cost_usd)                               AS cost_usd,
    sum(input_tokens)::BIGINT                   AS input_tokens,
    sum(output_tokens)::BIGINT                  AS output_tokens,
    sum(cached_input_tokens)::BIGINT            AS cached_input_tokens,
    sum(cache_write_tokens)::BIGINT             AS cache_write_tokens,
    sum(reasoning_tokens)::BIGINT               AS reasoning_tokens,
    sum(input_tokens + output_tokens)::BIGINT   AS total_tokens
FROM rollup_labels
GROUP BY day, provider
ORDER BY day, cost_usd DESC, provider;
