-- token_usage_over_time: tokens per UTC day and token type, one row each (unpivoted, for
-- charts), from the daily rollup. The types overlap as the usage event defines them:
-- cached_input and cache_write are part of input, cache_write_1h part of cache_write,
-- reasoning part of output.
CREATE OR REPLACE VIEW token_usage_over_time AS
SELECT day, token_type, tokens
FROM (
    SELECT
        day,
        sum(input_tokens)::BIGINT           AS "input",
        sum(output_tokens)::BIGINT          AS "output",
        sum(cached_input_tokens)::BIGINT    AS cached_input,
        sum(cache_write_tokens)::BIGINT     AS cache_write,
        sum(cache_write_1h_tokens)::BIGINT  AS cache_write_1h,
        sum(reasoning_tokens)::BIGINT       AS reasoning
    FROM rollup_labels
    GROUP BY day
) UNPIVOT (tokens FOR token_type IN ("input", "output", cached_input, cache_write, cache_write_1h, reasoning))
ORDER BY day, list_position(['input', 'output', 'cached_input', 'cache_write', 'cache_write_1h', 'reasoning'], token_type);
