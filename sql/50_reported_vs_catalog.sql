-- reported_vs_catalog: our price against the emitter's own figure (the event's cost_usd, kept
-- as reported_cost_usd), per provider/model, over the requests where both are known and ours
-- came from the catalog or an override. (Where the reported figure was used as the cost,
-- cost_source = 'reported', there is nothing to compare.)
-- difference_usd = cost_usd - reported_cost_usd: positive when we price higher.
CREATE OR REPLACE VIEW reported_vs_catalog AS
SELECT
    provider,
    model,
    count(*)::BIGINT                                                AS requests,
    sum(cost_usd)                                                   AS cost_usd,
    sum(reported_cost_usd)                                          AS reported_cost_usd,
    sum(cost_usd) - sum(reported_cost_usd)                          AS difference_usd,
    100 * (sum(cost_usd) - sum(reported_cost_usd)) / nullif(sum(reported_cost_usd), 0)
                                                                    AS difference_pct
FROM request_log
WHERE cost_source IN ('catalog', 'override')
  AND cost_usd IS NOT NULL
  AND reported_cost_usd IS NOT NULL
GROUP BY provider, model
ORDER BY abs(sum(cost_usd) - sum(reported_cost_usd)) DESC, provider, model;
