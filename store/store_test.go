package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

type row struct {
	ts     time.Time
	dev    int32
	metric int16
	val    float64
}

func record(t *testing.T, rows []row) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, TelemetrySchema)
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(r.ts.UnixMicro()))
		b.Field(1).(*array.Int32Builder).Append(r.dev)
		b.Field(2).(*array.Int16Builder).Append(r.metric)
		b.Field(3).(*array.Float64Builder).Append(r.val)
	}
	return b.NewRecordBatch()
}

func TestDevicesPersistAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	s, dir := openTemp(t)
	d, err := s.AddDevice(ctx, "motor-1", "secret-key-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, "motor-1", "other-key-1"); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("second add: got %v, want ErrDeviceExists", err)
	}
	for _, bad := range []string{"", "a/b", "dev#1", "-dev", "x+y"} {
		if _, err := s.AddDevice(ctx, bad, "secret-key-1"); err == nil {
			t.Errorf("AddDevice(%q) accepted an invalid name", bad)
		}
	}
	if _, err := s.AddDevice(ctx, "short", "1234"); err == nil {
		t.Error("a 4-character key was accepted")
	}
	s.Close()

	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	tests := []struct {
		name, dev, key string
		want           error
	}{
		{"right key", "motor-1", "secret-key-1", nil},
		{"wrong key", "motor-1", "secret-key-2", ErrWrongKey},
		{"unknown", "motor-9", "secret-key-1", ErrUnknownDevice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s2.Authenticate(tc.dev, tc.key)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil && got.ID != d.ID {
				t.Fatalf("id %d after reopen, want %d", got.ID, d.ID)
			}
		})
	}
	if _, err := s2.SetDeviceStatus(ctx, "motor-1", Disabled); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Authenticate("motor-1", "secret-key-1"); !errors.Is(err, ErrDeviceDisabled) {
		t.Fatalf("disabled device: got %v", err)
	}
	if _, err := s2.SetDeviceKey(ctx, "motor-1", "rotated-key"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.SetDeviceStatus(ctx, "motor-1", Enabled); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Authenticate("motor-1", "secret-key-1"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key after rotation: got %v", err)
	}
	if _, err := s2.Authenticate("motor-1", "rotated-key"); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	var stored string
	if err := s2.DB().QueryRow(`SELECT key_sha256 FROM devices`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "hmac-sha256:") || strings.Contains(stored, "rotated-key") {
		t.Fatalf("key column holds %q, want a keyed hash", stored)
	}
}

// TestKeyHashesNeedTheSecret: a device key is kept as HMAC-SHA256 under the
// data directory's secret file (0600), so the hash any API query can read
// is no help without it; a hash of the earlier, unkeyed kind still
// verifies and is replaced at the next successful connection; a data
// directory whose devices were hashed with a secret that has gone missing
// refuses to open, saying to restore it.
func TestKeyHashesNeedTheSecret(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	secretPath := filepath.Join(dir, KeySecretName)
	fi, err := os.Stat(secretPath)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("secret file: %v, %v; want 32 bytes, mode 0600", fi, err)
	}
	secret, _ := os.ReadFile(secretPath)
	if _, err := s.AddDevice(ctx, "pump-1", "pump-key-1"); err != nil {
		t.Fatal(err)
	}
	stored := func() string {
		var h string
		if err := s.DB().QueryRow(`SELECT key_sha256 FROM devices WHERE name = 'pump-1'`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("pump-key-1"))
	if want := "hmac-sha256:" + hex.EncodeToString(m.Sum(nil)); stored() != want {
		t.Fatalf("stored %q, want HMAC-SHA256 of the key under the secret file's bytes", stored())
	}

	// A device registered by an earlier version: plain SHA-256.
	plain := sha256.Sum256([]byte("pump-key-1"))
	if _, err := s.DB().Exec(`UPDATE devices SET key_sha256 = ? WHERE name = 'pump-1'`, hex.EncodeToString(plain[:])); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("pump-1", "not-the-key"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key against an unkeyed hash: %v", err)
	}
	if strings.HasPrefix(stored(), "hmac-sha256:") {
		t.Fatal("rehashed after a wrong key")
	}
	if _, err := s.Authenticate("pump-1", "pump-key-1"); err != nil {
		t.Fatalf("right key against an unkeyed hash: %v", err)
	}
	if !strings.HasPrefix(stored(), "hmac-sha256:") {
		t.Fatalf("still unkeyed after a successful connection: %q", stored())
	}
	if _, err := s.Authenticate("pump-1", "pump-key-1"); err != nil {
		t.Fatalf("right key after the rehash: %v", err)
	}
	s.Close()

	if err := os.Remove(secretPath); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, dir); err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("open without the secret its devices were hashed with: %v", err)
	}
}

func TestMetricIDsAreStableAcrossReopen(t *testing.T) {
	ctx := context.Background()
	s, dir := openTemp(t)
	a, _ := s.MetricID(ctx, "temperature")
	b, _ := s.MetricID(ctx, "vibration")
	if again, _ := s.MetricID(ctx, "temperature"); again != a || a == b {
		t.Fatalf("ids temperature=%d (again %d) vibration=%d", a, again, b)
	}
	if _, err := s.MetricID(ctx, "bad name"); err == nil {
		t.Fatal("a metric name with a space was accepted")
	}
	s.Close()
	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, _ := s2.MetricID(ctx, "vibration"); got != b {
		t.Fatalf("vibration id %d after reopen, want %d", got, b)
	}
	if s2.MetricName(a) != "temperature" {
		t.Fatalf("MetricName(%d) = %q", a, s2.MetricName(a))
	}
}

func TestCommitWritesReadingsAndDeadLettersTogether(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	dev, _ := s.AddDevice(ctx, "pump-7", "secret-key-7")
	temp, _ := s.MetricID(ctx, "temperature")
	t0 := time.Date(2026, 11, 29, 4, 0, 0, 123456000, time.UTC)
	rec := record(t, []row{{t0, dev.ID, temp, 71.5}, {t0.Add(time.Second), dev.ID, temp, 72.25}})
	defer rec.Release()
	dl := DeadLetter{Received: t0, DeviceID: dev.ID, Device: "pump-7", Source: "devices/pump-7/messages/events/", Reason: "not JSON", Body: []byte("garbage\x00")}
	if err := s.Commit(ctx, Batch{Readings: rec, DeadLetters: []DeadLetter{dl}}); err != nil {
		t.Fatal(err)
	}
	var n int
	var sum float64
	var first time.Time
	if err := s.DB().QueryRow(`SELECT count(*), sum(value), min(ts) FROM readings WHERE device = 'pump-7' AND metric = 'temperature'`).Scan(&n, &sum, &first); err != nil {
		t.Fatal(err)
	}
	if n != 2 || sum != 143.75 || !first.Equal(t0) {
		t.Fatalf("readings: n=%d sum=%v first=%v; want 2, 143.75, %v", n, sum, first, t0)
	}
	var reason string
	var body []byte
	if err := s.DB().QueryRow(`SELECT reason, body FROM dead_letters`).Scan(&reason, &body); err != nil {
		t.Fatal(err)
	}
	if reason != "not JSON" || string(body) != "garbage\x00" {
		t.Fatalf("dead letter %q %q", reason, body)
	}
}

func TestCommitIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	// A record with the wrong schema fails after the dead letter would have
	// been written; neither may remain.
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil))
	b.Field(0).(*array.Int64Builder).Append(1)
	bad := b.NewRecordBatch()
	defer bad.Release()
	err := s.Commit(ctx, Batch{Readings: bad, DeadLetters: []DeadLetter{{Received: time.Now(), Device: "d", Reason: "r", Body: []byte("b")}}})
	if err == nil {
		t.Fatal("commit of a wrongly shaped record succeeded")
	}
	var n int
	s.DB().QueryRow(`SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM dead_letters)`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows survived a failed commit", n)
	}
}

// TestQueryIsReadOnly: only read-only statements run, one at a time. The
// store allows external access here, so that the statement check alone
// stands between a query and, say, COPY writing a file.
func TestQueryIsReadOnly(t *testing.T) {
	ctx := context.Background()
	s, err := OpenOptions(ctx, t.TempDir(), Options{ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddDevice(ctx, "a-device", "secret-key-1")
	res, err := s.Query(ctx, `SELECT name, status FROM devices`, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Rows[0][0] != "a-device" || res.Columns[1].Name != "status" {
		t.Fatalf("got %+v", res)
	}
	for _, q := range []string{
		`DELETE FROM devices`,
		`INSERT INTO metrics VALUES (99, 'x')`,
		`DROP TABLE telemetry`,
		`CREATE TABLE t (x INT)`,
		`UPDATE devices SET status = 'disabled'`,
		`COPY devices TO 'out.csv'`,
		`ATTACH 'other.duckdb'`,
		// EXPLAIN ANALYZE runs what it explains.
		`EXPLAIN ANALYZE UPDATE devices SET status = 'disabled'`,
		"explain /* plan */ -- and run\n analyse DELETE FROM devices",
		`EXPLAIN (ANALYZE) DELETE FROM devices`,
		`EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1`,
	} {
		if _, err := s.Query(ctx, q, 10); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s: got %v, want ErrReadOnly", q, err)
		}
	}
	// A statement before a query is refused, not run: preparing the last
	// statement of several would run the ones before it.
	for _, q := range []string{
		`UPDATE devices SET status = 'disabled'; SELECT 1`,
		`SELECT 1; UPDATE devices SET status = 'disabled'`,
		`SELECT 1; SELECT 2`,
	} {
		if _, err := s.Query(ctx, q, 10); !errors.Is(err, ErrOneStatement) {
			t.Errorf("%s: got %v, want ErrOneStatement", q, err)
		}
	}
	var status string
	if err := s.DB().QueryRow(`SELECT status FROM devices WHERE name = 'a-device'`).Scan(&status); err != nil || status != string(Enabled) {
		t.Fatalf("a refused statement changed the database: status %q (%v)", status, err)
	}
	var n int
	if err := s.DB().QueryRow(`SELECT count(*) FROM metrics WHERE id = 99`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a refused INSERT ran: %d rows (%v)", n, err)
	}
	if res, err := s.Query(ctx, `EXPLAIN SELECT count(*) FROM devices`, 10); err != nil || len(res.Rows) == 0 {
		t.Fatalf("a plain EXPLAIN: %v %+v", err, res)
	}
	var devices int
	if err := s.DB().QueryRow(`SELECT count(*) FROM devices`).Scan(&devices); err != nil || devices != 1 {
		t.Fatalf("a refused DELETE ran: %d devices (%v)", devices, err)
	}
	res, err = s.Query(ctx, `SELECT * FROM range(5)`, 3)
	if err != nil || len(res.Rows) != 3 || !res.Truncated {
		t.Fatalf("limit: %v %+v", err, res)
	}
	if _, err := s.Query(ctx, `SELEC nonsense`, 3); err == nil {
		t.Fatal("a syntax error was not reported")
	}
}

// TestQueryCannotReadFiles: a query reads the database, not the server's
// files; with ExternalAccess it may, and telemetry still commits either way.
func TestQueryCannotReadFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, external := range []bool{false, true} {
		s, err := OpenOptions(ctx, filepath.Join(dir, fmt.Sprint(external)), Options{ExternalAccess: external})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"SELECT content FROM read_text('" + secret + "')",
			"SELECT * FROM read_csv('" + secret + "')",
		} {
			res, err := s.Query(ctx, q, 10)
			if !external && (err == nil || !strings.Contains(err.Error(), "disabled by configuration")) {
				t.Errorf("%s: %+v %v; want a refusal", q, res, err)
			}
			if external && (err != nil || !strings.Contains(fmt.Sprint(res), "hunter2")) {
				t.Errorf("with ExternalAccess, %s: %+v %v", q, res, err)
			}
		}
		err = s.QueryArrow(ctx, "SELECT content FROM read_text('"+secret+"')", func(array.RecordReader) error { return nil })
		if external != (err == nil) {
			t.Errorf("external access %v: QueryArrow gave %v", external, err)
		}
		rec := benchBatch(100, time.Now())
		if err := s.Commit(ctx, Batch{Readings: rec}); err != nil {
			t.Fatalf("external access %v: commit: %v", external, err)
		}
		rec.Release()
		s.Close()
	}
}

func TestCommandLifecycleSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	s, dir := openTemp(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	c := &Command{DeviceID: 1, MetricID: 0, Name: "reduce_load", Payload: []byte(`{"percent":30}`), State: CommandQueued, Created: now, Expires: now.Add(time.Minute)}
	if err := s.AddCommand(ctx, c); err != nil {
		t.Fatal(err)
	}
	done := &Command{DeviceID: 2, MetricID: -1, Name: "x", Payload: []byte(`{}`), State: CommandAcknowledged, Created: now, Expires: now, Verification: VerifyRecovered}
	if err := s.AddCommand(ctx, done); err != nil {
		t.Fatal(err)
	}
	c.State, c.Sent = CommandSent, now.Add(time.Second)
	if err := s.UpdateCommand(ctx, *c); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	open, err := s2.UnfinishedCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].ID != c.ID || open[0].State != CommandSent || !open[0].Sent.Equal(c.Sent) || string(open[0].Payload) != `{"percent":30}` {
		t.Fatalf("unfinished after reopen: %+v", open)
	}
	next := &Command{DeviceID: 1, Name: "y", Payload: []byte(`{}`), State: CommandQueued, Created: now, Expires: now}
	if err := s2.AddCommand(ctx, next); err != nil || next.ID != done.ID+1 {
		t.Fatalf("id after reopen %d (err %v), want %d", next.ID, err, done.ID+1)
	}
}

// TestThreadsOption: the DuckDB thread count given to OpenOptions is the
// one DuckDB runs with, the default is DefaultThreads, and a negative
// count is refused.
func TestThreadsOption(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ set, want int }{{0, DefaultThreads()}, {1, 1}, {3, 3}} {
		s, err := OpenOptions(ctx, t.TempDir(), Options{Threads: c.set})
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := s.DB().QueryRowContext(ctx, `SELECT current_setting('threads')`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got != c.want {
			t.Errorf("Threads %d: DuckDB runs %d threads, want %d", c.set, got, c.want)
		}
	}
	if _, err := OpenOptions(ctx, t.TempDir(), Options{Threads: -1}); err == nil {
		t.Error("a negative thread count was accepted")
	}
}

// TestRowGroupBatchesGoStraightToTheFile pins RowGroupRows to DuckDB's row
// group size and shows why batches of that size are cheap: their full row
// group is in the database file (persistent) as soon as the commit returns,
// while a smaller batch waits in memory and the write-ahead log for the
// next checkpoint.
func TestRowGroupBatchesGoStraightToTheFile(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	commit := func(n int) {
		t.Helper()
		rows := make([]row, n)
		for i := range rows {
			rows[i] = row{t0.Add(time.Duration(i) * time.Millisecond), 1, 0, float64(i % 100)}
		}
		rec := record(t, rows)
		defer rec.Release()
		if err := s.Commit(ctx, Batch{Readings: rec}); err != nil {
			t.Fatal(err)
		}
	}
	type group struct {
		rows       int64
		persistent bool
	}
	groups := func() []group {
		t.Helper()
		rs, err := s.DB().QueryContext(ctx, `SELECT row_group_id, sum(count), bool_and(persistent) FROM pragma_storage_info('telemetry')
			WHERE column_id = 0 AND segment_type <> 'VALIDITY' GROUP BY row_group_id ORDER BY row_group_id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		var gs []group
		for rs.Next() {
			var id int64
			var g group
			if err := rs.Scan(&id, &g.rows, &g.persistent); err != nil {
				t.Fatal(err)
			}
			gs = append(gs, g)
		}
		return gs
	}
	commit(1000)
	if gs := groups(); len(gs) != 1 || gs[0] != (group{1000, false}) {
		t.Fatalf("after a small batch: row groups %+v, want one of 1000 rows not yet in the file", gs)
	}
	s2, _ := openTemp(t)
	s = s2
	commit(RowGroupRows + 7)
	gs := groups()
	if len(gs) != 2 || gs[0] != (group{RowGroupRows, true}) || gs[1].rows != 7 {
		t.Fatalf("after a batch of %d rows: row groups %+v, want a full one of %d rows in the file, then 7", RowGroupRows+7, gs, RowGroupRows)
	}
}

// TestSourcePositions: a saved position is read back, replaced by the next
// one, kept apart per source and across a reopen; a source never saved has
// none.
func TestSourcePositions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.SourcePosition(ctx, "hub/Partitions/0"); ok || err != nil {
		t.Fatalf("fresh store: position found=%v, err %v; want none", ok, err)
	}
	for _, p := range []struct{ src, pos string }{{"hub/Partitions/0", "4096"}, {"hub/Partitions/1", "12"}, {"hub/Partitions/0", "8192"}} {
		if err := s.SaveSourcePosition(ctx, p.src, p.pos); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for src, want := range map[string]string{"hub/Partitions/0": "8192", "hub/Partitions/1": "12"} {
		if got, ok, err := s.SourcePosition(ctx, src); !ok || err != nil || got != want {
			t.Fatalf("%s after reopen: %q, %v, %v; want %q", src, got, ok, err, want)
		}
	}
}

// TestQueryJSONValues: every value of a query answer encodes as JSON, and
// faithfully, at any depth: a DOUBLE or FLOAT that is not finite as
// "NaN", "Infinity" or "-Infinity" (it used to make the whole answer
// unencodable); a UUID as its text and a BLOB as base64, told apart by the
// column's type though the driver returns both as bytes (a BLOB used to
// become a Go string, its invalid UTF-8 turned into U+FFFD, and a UUID
// was taken for a BLOB); a MAP as an object in its order (it used to
// become Go's debug text).
func TestQueryJSONValues(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	const id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	for _, tc := range []struct{ sql, want string }{
		{`SELECT 1/0, -1/0, 'nan'::DOUBLE, 2.5::DOUBLE, NULL::DOUBLE`, `["Infinity","-Infinity","NaN",2.5,null]`},
		{`SELECT 'inf'::FLOAT, '-inf'::FLOAT, 'nan'::FLOAT, 0.1::FLOAT`, `["Infinity","-Infinity","NaN",0.1]`},
		{`SELECT [1, 'nan'::DOUBLE, -1/0], ['inf'::FLOAT], [1.5, 1/0]::DOUBLE[2]`, `[[1,"NaN","-Infinity"],["Infinity"],[1.5,"Infinity"]]`},
		{`SELECT {'x': 'nan'::DOUBLE, 'y': [1/0]}, MAP {'a': -1/0, 'b': 1}`, `[{"x":"NaN","y":["Infinity"]},{"a":"-Infinity","b":1}]`},
		{`SELECT '` + id + `'::UUID, '\xFF\x00\xAB'::BLOB, ''::BLOB, NULL::UUID`, `["` + id + `","/wCr","",null]`},
		// 16 bytes, as many as a UUID's: still a BLOB.
		{`SELECT '\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0A\x0B\x0C\x0D\x0E\x0F'::BLOB`, `["AAECAwQFBgcICQoLDA0ODw=="]`},
		{`SELECT ['` + id + `'::UUID], [['\xFF'::BLOB]], ['` + id + `'::UUID]::UUID[1]`, `[["` + id + `"],[["/w=="]],["` + id + `"]]`},
		{`SELECT {'id': '` + id + `'::UUID, 'body': '\xFF\x00\xAB'::BLOB, 'say "hi"': ['` + id + `'::UUID]}`, `[{"body":"/wCr","id":"` + id + `","say \"hi\"":["` + id + `"]}]`},
		{`SELECT MAP {2: '\xFF'::BLOB, 1: '\x00'::BLOB}, MAP {'k': {'u': '` + id + `'::UUID}}`, `[{"2":"/w==","1":"AA=="},{"k":{"u":"` + id + `"}}]`},
		{`SELECT union_value(u := '` + id + `'::UUID)::UNION(u UUID, b BLOB), union_value(b := '\xFF'::BLOB)::UNION(u UUID, b BLOB)`, `[{"value":"` + id + `","tag":"u"},{"value":"/w==","tag":"b"}]`},
	} {
		res, err := s.Query(ctx, tc.sql, 10)
		if err != nil {
			t.Errorf("%s: %v", tc.sql, err)
			continue
		}
		got, err := json.Marshal(res.Rows[0])
		if err != nil || string(got) != tc.want {
			t.Errorf("%s:\n got %s (%v)\nwant %s", tc.sql, got, err, tc.want)
		}
	}
}

// TestParseType reads the type names the driver gives as far as the JSON
// conversion needs them, and gives up (nil) on one it cannot read.
func TestParseType(t *testing.T) {
	st := parseType(`STRUCT("a ""b""" UUID[], "m" MAP(VARCHAR, BLOB[3]), "d" DECIMAL(18,3))[]`)
	if !st.is("LIST") || !st.element().is("STRUCT") {
		t.Fatalf("list of structs: %+v", st)
	}
	fields := st.element()
	if !fields.field(`a "b"`).is("LIST") || !fields.field(`a "b"`).element().is("UUID") {
		t.Errorf(`field a "b": %+v`, fields.field(`a "b"`))
	}
	if m := fields.field("m"); !m.is("MAP") || !m.key.is("VARCHAR") || !m.elem.is("LIST") || !m.elem.element().is("BLOB") {
		t.Errorf("field m: %+v", m)
	}
	if !fields.field("d").is("DECIMAL") {
		t.Errorf("field d: %+v", fields.field("d"))
	}
	for _, bad := range []string{"", "STRUCT(", `STRUCT("a UUID)`, "MAP(UUID)", "UUID[", "UUID extra", "lowercase"} {
		if got := parseType(bad); got != nil {
			t.Errorf("parseType(%q) = %+v, want nil", bad, got)
		}
	}
}

// TestOpenHintsAtAnotherProcessOnlyWhenLocked: a data directory another
// process holds is refused with a hint at that process; any other failure
// to open (here a file that is not a database) is reported without it.
func TestOpenHintsAtAnotherProcessOnlyWhenLocked(t *testing.T) {
	const dirVar, errVar = "VIGIL_TEST_OPEN_DIR", "VIGIL_TEST_OPEN_ERR"
	if dir := os.Getenv(dirVar); dir != "" {
		// The other process: try the directory and write down the error.
		msg := "opened"
		if s, err := Open(context.Background(), dir); err != nil {
			msg = err.Error()
		} else {
			s.Close()
		}
		if err := os.WriteFile(os.Getenv(errVar), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	const hint = "another process has this data directory open"
	_, dir := openTemp(t) // open until the test ends
	errFile := filepath.Join(t.TempDir(), "err.txt")
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenHintsAtAnotherProcessOnlyWhenLocked$")
	cmd.Env = append(os.Environ(), dirVar+"="+dir, errVar+"="+errFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the other process: %v\n%s", err, out)
	}
	msg, err := os.ReadFile(errFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg), "Could not set lock") || !strings.Contains(string(msg), hint) {
		t.Errorf("open of a locked directory: %q; want DuckDB's lock error and %q", msg, hint)
	}

	notDB := t.TempDir()
	if err := os.WriteFile(filepath.Join(notDB, FileName), []byte("not a database, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), notDB)
	if err == nil || !strings.Contains(err.Error(), "not a valid DuckDB database") || strings.Contains(err.Error(), "another") {
		t.Errorf("open of a file that is not a database: %v; want DuckDB's error and no word of another process", err)
	}
}

// TestQueryComputesOnlyWhatItAnswers: a query answered with its first
// rows is not computed to its end (DuckDB holds a query's whole answer
// before the first row can be read, so a look at a large table held all
// of it): a row far past the limit that would fail the query is never
// reached.
func TestQueryComputesOnlyWhatItAnswers(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const q = `SELECT CASE WHEN i < 1000000 THEN i ELSE error('computed past the limit') END AS i
		FROM range(2000000) t(i) -- ordered as the range goes`
	res, err := s.Query(ctx, q, 10)
	if err != nil {
		t.Fatalf("the first 10 rows: %v", err)
	}
	if len(res.Rows) != 10 || !res.Truncated || res.Rows[9][0] != int64(9) {
		t.Fatalf("got %d rows (truncated %v): %v", len(res.Rows), res.Truncated, res.Rows)
	}
	// Statements that cannot be a subquery still answer.
	for _, q := range []string{`SELECT 42;`, `EXPLAIN SELECT 1`, `DESCRIBE devices`} {
		if res, err := s.Query(ctx, q, 10); err != nil || len(res.Rows) == 0 {
			t.Errorf("%s: %v %+v", q, err, res)
		}
	}
	// Without a limit the whole answer is computed, and fails.
	if _, err := s.Query(ctx, q, 0); err == nil || !strings.Contains(err.Error(), "computed past the limit") {
		t.Fatalf("the whole answer: %v, want the query's own error", err)
	}
}
