DROP TABLE group_policies;
DROP TABLE policies;
