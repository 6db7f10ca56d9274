-- top_expensive_requests: the request log, most expensive first (add a LIMIT).
-- Unpriced requests (cost_usd NULL) come last.
CREATE OR REPLACE VIEW top_expensive_requests AS
SELECT *
FROM request_log
ORDER BY cost_usd DESC NULLS LAST, time DESC, event_id;
