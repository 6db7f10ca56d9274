-- request_log: the request log, one row per event_id.
--
-- `events` holds every row the lake has, and a producer retry can land the same event twice
-- (under two offsets, or in two source files). Every total counts an event once (contract 2,
-- invariant 4), so this view keeps the earliest ingested copy of each event, ordered exactly as
-- the rollups order copies: ingested_at, source_topic, source_partition, source_offset. An event
-- is an event_id on its UTC date (a retry carries the event's own timestamp), as in the rollups.
-- cost_usd is NULL when no price is known (cost_source = 'unpriced'), never 0.
CREATE OR REPLACE VIEW request_log AS
SELECT
    "timestamp"            AS time,
    virtual_key,
    team,
    customer,
    "user",
    project,
    provider,
    model,
    input_tokens,          -- all prompt tokens, cached and cache-write included
    output_tokens,         -- all completion tokens, reasoning included
    cached_input_tokens,
    cache_write_tokens,
    cache_write_1h_tokens,
    reasoning_tokens,
    cost_usd,
    cost_input_usd,
    cost_cached_input_usd,
    cost_cache_write_usd,
    cost_output_usd,
    cost_reasoning_usd,
    reported_cost_usd,     -- the emitter's own figure, if it sent one
    cost_source,           -- catalog | override | reported | unpriced | cache_hit
    latency_ms,
    status,
    status_code,
    request_type,
    batch,
    cache_hit,
    tags,
    event_id,
    price_id,
    ingested_at
FROM events
QUALIFY row_number() OVER (
    PARTITION BY "timestamp"::DATE, event_id
    ORDER BY ingested_at, source_topic, source_partition, source_offset
) = 1;
