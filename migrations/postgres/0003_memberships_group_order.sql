-- A group's members are listed a page at a time in membership-id order (GET
-- /api/permissions/group/:id?after=): with the id in the index, each page is a range of it
-- instead of a sort of the whole group. (SQLite's index on group_id already ends with the
-- row id, which is the membership id.)
DROP INDEX memberships_group;
CREATE INDEX memberships_group ON memberships (group_id, id);
