-- One-character searches: the read model by its lower-cased first character, in page order
-- (see 20261207000000_dashboard_short_search_count). Built CONCURRENTLY, alone in its file.
CREATE INDEX CONCURRENTLY IF NOT EXISTS "CompanionDashboard_name_prefix1_idx"
    ON "CompanionDashboard" (lower(left("name", 1)), "isSystem" DESC, "createdAt" DESC, "id")
    INCLUDE ("categoryId", "name");
