-- The account epoch: a random value every change to who may do what replaces, in the same
-- transaction. Nodes cache authorization decisions under it (auth::service) and see a change
-- made anywhere (another node, `aerugo admin create-user`, a management call) as a new epoch.
-- Random rather than a counter, so a database restored from a backup never repeats an epoch.
CREATE TABLE account_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT    NOT NULL
) STRICT;

INSERT INTO account_epoch (id, value) VALUES (1, lower(hex(randomblob(16))));

-- SQLite triggers take one event each: insert, update and delete on every table a decision
-- reads. (Deletions that cascade fire the child tables' triggers too; one is enough.)
CREATE TRIGGER namespaces_epoch_i AFTER INSERT ON namespaces BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER namespaces_epoch_u AFTER UPDATE ON namespaces BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER namespaces_epoch_d AFTER DELETE ON namespaces BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER users_epoch_i AFTER INSERT ON users BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER users_epoch_u AFTER UPDATE ON users BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER users_epoch_d AFTER DELETE ON users BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER org_members_epoch_i AFTER INSERT ON org_members BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER org_members_epoch_u AFTER UPDATE ON org_members BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER org_members_epoch_d AFTER DELETE ON org_members BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER teams_epoch_d AFTER DELETE ON teams BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER team_members_epoch_i AFTER INSERT ON team_members BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER team_members_epoch_d AFTER DELETE ON team_members BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_settings_epoch_i AFTER INSERT ON repository_settings BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_settings_epoch_u AFTER UPDATE ON repository_settings BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_settings_epoch_d AFTER DELETE ON repository_settings BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_user_grants_epoch_i AFTER INSERT ON repository_user_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_user_grants_epoch_u AFTER UPDATE ON repository_user_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_user_grants_epoch_d AFTER DELETE ON repository_user_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_team_grants_epoch_i AFTER INSERT ON repository_team_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_team_grants_epoch_u AFTER UPDATE ON repository_team_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER repository_team_grants_epoch_d AFTER DELETE ON repository_team_grants BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER robots_epoch_i AFTER INSERT ON robots BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER robots_epoch_u AFTER UPDATE ON robots BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
CREATE TRIGGER robots_epoch_d AFTER DELETE ON robots BEGIN UPDATE account_epoch SET value = lower(hex(randomblob(16))); END;
