package nqsql_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/nqlite/nqlite/service/client/nqsql"
)

// TestSqlx uses the driver through sqlx: struct scanning, named
// parameters, IN lists, transactions.
func TestSqlx(t *testing.T) {
	url, _ := start(t, 2)
	db, err := sqlx.Connect("nqlite", url+"?db=main")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := testCtx(t)
	db.MustExecContext(ctx, `CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, born DATETIME, photo BLOB)`)
	type person struct {
		ID    int64          `db:"id"`
		Name  string         `db:"name"`
		Email sql.NullString `db:"email"`
		Born  time.Time      `db:"born"`
		Photo []byte         `db:"photo"`
	}
	born := time.Date(1990, 1, 2, 3, 4, 5, 0, time.UTC)
	people := []person{
		{Name: "Ann", Email: sql.NullString{String: "ann@example.com", Valid: true}, Born: born, Photo: []byte{1, 2}},
		{Name: "Bob", Born: born.AddDate(1, 0, 0)},
	}
	for _, p := range people {
		if _, err := db.NamedExecContext(ctx, `INSERT INTO person(name, email, born, photo) VALUES(:name, :email, :born, :photo)`, p); err != nil {
			t.Fatal(err)
		}
	}
	var got []person
	if err := db.SelectContext(ctx, &got, "SELECT * FROM person ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "Ann" || !got[0].Email.Valid || !got[0].Born.Equal(born) || string(got[0].Photo) != "\x01\x02" || got[1].Email.Valid || got[1].Photo != nil {
		t.Errorf("select: %+v", got)
	}
	var one person
	if err := db.GetContext(ctx, &one, "SELECT * FROM person WHERE name = ?", "Bob"); err != nil || one.ID != 2 {
		t.Errorf("get: %+v %v", one, err)
	}
	q, args, err := sqlx.In("SELECT count(*) FROM person WHERE name IN (?)", []string{"Ann", "Bob", "Eve"})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.GetContext(ctx, &n, db.Rebind(q), args...); err != nil || n != 2 {
		t.Errorf("IN: %d %v", n, err)
	}
	tx := db.MustBeginTx(ctx, nil)
	tx.MustExecContext(ctx, "UPDATE person SET email = ? WHERE name = ?", "bob@example.com", "Bob")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var email string
	if err := db.GetContext(ctx, &email, "SELECT email FROM person WHERE id = 2"); err != nil || email != "bob@example.com" {
		t.Errorf("after tx: %q %v", email, err)
	}
}

// TestGoose runs goose migrations (dialect sqlite3) through the driver:
// each migration is a transaction, which the driver sends at Commit.
func TestGoose(t *testing.T) {
	url, _ := start(t, 2)
	db := open(t, url)
	dir := t.TempDir()
	files := map[string]string{
		"00001_users.sql": `-- +goose Up
CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO users(name) VALUES('root');
-- +goose Down
DROP TABLE users;
`,
		"00002_email.sql": `-- +goose Up
ALTER TABLE users ADD COLUMN email TEXT;
CREATE INDEX users_email ON users(email);
-- +goose Down
DROP INDEX users_email;
ALTER TABLE users DROP COLUMN email;
`,
		"00003_trigger.sql": `-- +goose Up
-- +goose StatementBegin
CREATE TRIGGER users_lower AFTER INSERT ON users BEGIN
  UPDATE users SET email = lower(NEW.email) WHERE id = NEW.id;
END;
-- +goose StatementEnd
-- +goose Down
DROP TRIGGER users_lower;
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goose.SetLogger(goose.NopLogger())
	if err := goose.SetDialect("sqlite3"); err != nil {
		t.Fatal(err)
	}
	if err := goose.Up(db, dir); err != nil {
		t.Fatal(err)
	}
	version, err := goose.GetDBVersion(db)
	if err != nil || version != 3 {
		t.Fatalf("version after up: %d %v", version, err)
	}
	mustExec(t, db, "INSERT INTO users(name, email) VALUES('x', 'X@EXAMPLE.COM')")
	if got := scalar[string](t, db, "SELECT email FROM users WHERE name = 'x'"); got != "x@example.com" {
		t.Errorf("trigger: %q", got)
	}
	// Up again applies nothing.
	if err := goose.Up(db, dir); err != nil {
		t.Fatal(err)
	}
	if err := goose.Down(db, dir); err != nil {
		t.Fatal(err)
	}
	if version, _ = goose.GetDBVersion(db); version != 2 {
		t.Errorf("version after down: %d", version)
	}
	if n := scalar[int64](t, db, "SELECT count(*) FROM sqlite_schema WHERE name = 'users_lower'"); n != 0 {
		t.Errorf("the trigger survived down")
	}
	// goose's own table: applied_at (TIMESTAMP) scans as time.Time.
	var at time.Time
	if err := db.QueryRowContext(testCtx(t), "SELECT tstamp FROM goose_db_version WHERE version_id = 1").Scan(&at); err != nil || time.Since(at) > time.Hour {
		t.Errorf("tstamp: %v %v", at, err)
	}
	_ = nqsql.DriverName
}
