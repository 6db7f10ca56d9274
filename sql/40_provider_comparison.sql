-- provider_comparison: providers side by side over everything the daily rollup holds: how
-- many models were used, requests, spend and its share, the blended cost per request and per
-- 1,000 tokens (input + output) across all of the provider's models, latency and error rate.
-- Unpriced requests are left out of the per-request and per-token figures (see model_efficiency).
CREATE OR REPLACE VIEW provider_comparison AS
SELECT
    provider,
    count(DISTINCT model)::BIGINT                                       AS models,
    sum(requests)::BIGINT                                               AS requests,
    sum(unpriced)::BIGINT                                               AS unpriced,
    sum(cost_usd)                                                       AS cost_usd,
    sum(cost_usd) / nullif(sum(sum(cost_usd)) OVER (), 0)               AS cost_share,
    sum(input_tokens + output_tokens)::BIGINT                           AS total_tokens,
    sum(cost_usd) / nullif(sum(requests) - sum(unpriced), 0)            AS cost_per_request,
    1000 * sum(cost_usd) FILTER (WHERE unpriced = 0)
         / nullif(sum(input_tokens + output_tokens) FILTER (WHERE unpriced = 0), 0)
                                                                        AS cost_per_1k_tokens,
    sum(latency_ms_sum) / nullif(sum(latency_count), 0)                 AS avg_latency_ms,
    coalesce(sum(requests) FILTER (WHERE status = 'error'), 0) / sum(requests)
                                                                        AS error_rate
FROM rollup_labels
GROUP BY provider
ORDER BY cost_usd DESC, provider;
