-- Short searches (one or two characters) use an index too.
--
-- A one- or two-character pattern has no trigram, so `"name" ILIKE '%le%'` read the whole read
-- model (17 ms at 16 000 public companions, 88 ms at 164 000: linear in the catalogue). A short
-- search now means "names starting with these characters" (case-insensitive), which is what a
-- search box shows while the first letters are typed, and the read model has a btree per length
-- (the next two migrations, built CONCURRENTLY: the read model is a big existing table) on the
-- lower-cased first one or two characters followed by the page order, so a page is an index
-- scan of its own rows (the cost grows with the log of the catalogue) and a count reads only
-- the matching index entries (the name is included, so it is an index-only scan).
--
-- gcbb_count_dashboard_prefix counts like gcbb_count_dashboard does for a search: by
-- EXECUTE … USING, so each call is planned with its value (`gcbb db verify` checks that the
-- body still runs the statements of src/db/companions.rs: COUNT_PREFIX1_SQL, …), less the
-- companions hidden since the last refresh (see 20261206000000_privacy_purge_outbox).
-- It creates a function: nothing is locked beyond the catalog.

CREATE OR REPLACE FUNCTION gcbb_count_dashboard_prefix(p_category_id text, p_prefix text)
    RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    counted bigint;
    hidden bigint;
    n integer := char_length(p_prefix);
BEGIN
    IF n NOT IN (1, 2) THEN
        RAISE EXCEPTION 'a short search is one or two characters, not %', n;
    END IF;
    IF p_category_id IS NULL AND n = 1 THEN
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE lower(left("name", 1)) = $1'
            INTO counted USING p_prefix;
    ELSIF p_category_id IS NULL THEN
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE lower(left("name", 2)) = $1'
            INTO counted USING p_prefix;
    ELSIF n = 1 THEN
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND lower(left("name", 1)) = $2'
            INTO counted USING p_category_id, p_prefix;
    ELSE
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND lower(left("name", 2)) = $2'
            INTO counted USING p_category_id, p_prefix;
    END IF;
    -- Hidden since the read model's refresh: it still lists them, the pages don't.
    SELECT count(*) INTO hidden
    FROM "CompanionDashboard" d
    WHERE d."id" IN (SELECT o."companionId" FROM "PrivacyPurgeOutbox" o)
      AND NOT EXISTS (SELECT 1 FROM "Companion" c WHERE c."id" = d."id" AND NOT c."private")
      AND (p_category_id IS NULL OR d."categoryId" = p_category_id)
      AND lower(left(d."name", n)) = p_prefix;
    RETURN counted - hidden;
END
$$;
