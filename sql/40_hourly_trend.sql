-- hourly_trend: requests, spend and tokens per UTC hour, from the hourly rollup by provider,
-- model and status (rollup_models_hourly: a month is some 20,000 rows however many keys, teams
-- and customers there are, so the whole month's trend is one small scan).
-- unpriced counts requests with no known price (not in cost_usd); errors counts status 'error'.
CREATE OR REPLACE VIEW hourly_trend AS
SELECT
    bucket                                                  AS hour,
    sum(requests)::BIGINT                                   AS requests,
    sum(unpriced)::BIGINT                                   AS unpriced,
    coalesce(sum(requests) FILTER (WHERE status = 'error'), 0)::BIGINT
                                                            AS errors,
    sum(cost_usd)                                           AS cost_usd,
    sum(input_tokens)::BIGINT                               AS input_tokens,
    sum(output_tokens)::BIGINT                              AS output_tokens,
    sum(input_tokens + output_tokens)::BIGINT               AS total_tokens,
    sum(latency_ms_sum) / nullif(sum(latency_count), 0)     AS avg_latency_ms
FROM rollup_models_hourly
GROUP BY bucket
ORDER BY hour;
