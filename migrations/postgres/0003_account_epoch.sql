-- The account epoch (see migrations/sqlite/0004_account_epoch.sql): a random value every
-- change to who may do what replaces, in the changing transaction, so every node's cached
-- authorization decisions end with it. Statement-level triggers: one bump per statement.
CREATE TABLE account_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT    NOT NULL
);

INSERT INTO account_epoch (id, value) VALUES (1, md5(random()::text || clock_timestamp()::text));

CREATE FUNCTION bump_account_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE account_epoch SET value = md5(random()::text || clock_timestamp()::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER namespaces_epoch AFTER INSERT OR UPDATE OR DELETE ON namespaces
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER users_epoch AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER org_members_epoch AFTER INSERT OR UPDATE OR DELETE ON org_members
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER teams_epoch AFTER DELETE ON teams
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER team_members_epoch AFTER INSERT OR DELETE ON team_members
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER repository_settings_epoch AFTER INSERT OR UPDATE OR DELETE ON repository_settings
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER repository_user_grants_epoch AFTER INSERT OR UPDATE OR DELETE ON repository_user_grants
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER repository_team_grants_epoch AFTER INSERT OR UPDATE OR DELETE ON repository_team_grants
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
CREATE TRIGGER robots_epoch AFTER INSERT OR UPDATE OR DELETE ON robots
    FOR EACH STATEMENT EXECUTE FUNCTION bump_account_epoch();
