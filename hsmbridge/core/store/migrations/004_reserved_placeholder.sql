-- 004: reserved for another branch's migration (the loader refuses gaps, and branch push owns
-- only 005). DELETE THIS FILE (or renumber 005_cloud_push.sql to 004) when merging; it contains
-- no statement.
SELECT 1;
