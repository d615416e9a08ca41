-- Searches plan with their index.
--
-- gcbb_count_dashboard was a SQL function: Postgres plans its query once per call with the
-- parameters unknown, so `"name" ILIKE '%' || p_name_contains || '%'` could never use the
-- trigram index and every search counted by reading the whole read model (19 ms at 16 000 rows,
-- against 1.5 ms through the index). It is now PL/pgSQL: the counts without a search stay
-- static statements (an equality on "categoryId" plans well without its value), and the counts
-- with a search run by EXECUTE … USING, which plans each call with the actual pattern, so
-- Postgres sees a constant pattern and picks the trigram index whenever it is worth it (a one-
-- or two-character pattern has no trigram: a scan is then the right plan). Each branch names
-- its query without an `IS NULL OR`, which no plan can turn into an index condition.
--
-- `gcbb db verify` explains the two EXECUTEd statements with a sample pattern and checks that
-- this function still runs them (src/db/companions.rs: COUNT_SEARCH_SQL and
-- COUNT_SEARCH_IN_CATEGORY_SQL hold the same text).
--
-- gcbb_refresh_dashboard now also empties the GIN pending list of the read model's trigram
-- index. REFRESH … CONCURRENTLY applies its diff as inserts, which a GIN index with fastupdate
-- (the default) queues in a pending list that every search then reads row by row until a
-- vacuum merges it: a refresh after a day of chat left ~100 pages there and searches took
-- 14 ms instead of 1 ms. Merging it right after the refresh costs ~15 ms; turning fastupdate
-- off instead made each refresh ~40 % slower (every changed row updates the index in place).
--
-- Both statements replace a function in place (same name, arguments and result): nothing is
-- locked beyond the catalog row, and callers see the new body at their next call.

CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text)
    RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    counted bigint;
BEGIN
    IF p_name_contains IS NULL THEN
        IF p_category_id IS NULL THEN
            SELECT count(*) INTO counted FROM "CompanionDashboard";
        ELSE
            SELECT count(*) INTO counted FROM "CompanionDashboard" WHERE "categoryId" = p_category_id;
        END IF;
    ELSIF p_category_id IS NULL THEN
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "name" ILIKE ''%'' || $1 || ''%'''
            INTO counted USING p_name_contains;
    ELSE
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND "name" ILIKE ''%'' || $2 || ''%'''
            INTO counted USING p_category_id, p_name_contains;
    END IF;
    RETURN counted;
END
$$;

CREATE OR REPLACE FUNCTION gcbb_refresh_dashboard(p_system_user_id text DEFAULT 'system')
    RETURNS TABLE ("startedAt" timestamptz, "durationMs" double precision)
    LANGUAGE plpgsql
    AS $$
DECLARE
    started timestamptz := clock_timestamp();
    took double precision;
BEGIN
    PERFORM set_config('gcbb.system_user_id', p_system_user_id, true);
    REFRESH MATERIALIZED VIEW CONCURRENTLY "CompanionDashboard";
    REFRESH MATERIALIZED VIEW CONCURRENTLY "CompanionCategoryCount";
    PERFORM gin_clean_pending_list('"CompanionDashboard_name_trgm_idx"'::regclass);
    took := extract(epoch FROM clock_timestamp() - started) * 1000;
    INSERT INTO "DashboardRefreshLog" ("startedAt", "finishedAt", "durationMs", "systemUserId")
    VALUES (started, clock_timestamp(), took, p_system_user_id);
    RETURN QUERY SELECT started, took;
END
$$;
