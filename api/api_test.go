package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/vigil-iot/vigil/store"
)

func serve(t testing.TB, token string) (*Client, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := Handler(st, func() any { return map[string]int{"uptime": 1} }, token, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Token: token}, st
}

func code(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestDevicesAPI(t *testing.T) {
	c, st := serve(t, "")
	ctx := context.Background()
	d, err := c.AddDevice(ctx, "valve-3", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Key) < 16 {
		t.Fatalf("generated key %q", d.Key)
	}
	if _, err := st.Authenticate("valve-3", d.Key); err != nil {
		t.Fatalf("the returned key does not authenticate: %v", err)
	}
	if _, err := c.AddDevice(ctx, "valve-3", ""); code(err) != http.StatusConflict {
		t.Fatalf("duplicate add: %v", err)
	}
	if _, err := c.AddDevice(ctx, "bad/name", ""); code(err) != http.StatusBadRequest {
		t.Fatalf("bad name: %v", err)
	}
	if got, err := c.SetDeviceStatus(ctx, "valve-3", store.Disabled); err != nil || got.Status != store.Disabled {
		t.Fatalf("disable: %+v %v", got, err)
	}
	if _, err := st.Authenticate("valve-3", d.Key); !errors.Is(err, store.ErrDeviceDisabled) {
		t.Fatalf("after disable: %v", err)
	}
	if _, err := c.SetDeviceStatus(ctx, "nobody", store.Disabled); code(err) != http.StatusNotFound {
		t.Fatalf("disable unknown: %v", err)
	}
	ds, err := c.Devices(ctx)
	if err != nil || len(ds) != 1 || ds[0].Name != "valve-3" || ds[0].Status != store.Disabled {
		t.Fatalf("list: %+v %v", ds, err)
	}
}

func TestQueryAPI(t *testing.T) {
	c, st := serve(t, "")
	ctx := context.Background()
	st.AddDevice(ctx, "valve-1", "valve-key-1")
	res, err := c.Query(ctx, "SELECT name FROM devices", 0)
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != "valve-1" {
		t.Fatalf("query: %+v %v", res, err)
	}
	if _, err := c.Query(ctx, "DROP TABLE devices", 0); code(err) != http.StatusBadRequest {
		t.Fatalf("DROP: %v", err)
	}
	if _, err := c.Query(ctx, "DELETE FROM devices; SELECT 1", 0); code(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "one statement") {
		t.Fatalf("a DELETE before a SELECT: %v", err)
	}
	if res, err := st.Query(ctx, "SELECT count(*) FROM devices", 1); err != nil || res.Rows[0][0] != int64(1) {
		t.Fatalf("the DELETE ran: %+v %v", res, err)
	}
	if _, err := c.Query(ctx, "", 0); code(err) != http.StatusBadRequest {
		t.Fatalf("empty: %v", err)
	}
	if _, err := c.Query(ctx, "SELECT 1", MaxRowLimit+1); code(err) != http.StatusBadRequest {
		t.Fatalf("limit: %v", err)
	}
	resp, err := http.Get(c.BaseURL + "/api/v1/query?sql=SELECT%2042%20AS%20answer")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"columns":[{"name":"answer","type":"INTEGER"}],"rows":[[42]]}`+"\n" {
		t.Fatalf("GET query: %d %s", resp.StatusCode, body)
	}
}

func TestToken(t *testing.T) {
	c, _ := serve(t, "s3cret")
	ctx := context.Background()
	if _, err := c.Devices(ctx); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	wrong := &Client{BaseURL: c.BaseURL, Token: "guess"}
	if _, err := wrong.Devices(ctx); code(err) != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
	none := &Client{BaseURL: c.BaseURL}
	if _, err := none.Query(ctx, "SELECT 1", 0); code(err) != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
}

// TestPutModelChecksKindAgainstName: a DEVICE/* name takes a vector model
// and only that; other names take series models only. A spec with a
// misspelt field or an oversized window is refused too.
func TestPutModelChecksKindAgainstName(t *testing.T) {
	c, _ := serve(t, "")
	ctx := context.Background()
	vector := json.RawMessage(`{"kind":"mahalanobis","params":{"metrics":["load","temperature"]}}`)
	if m, err := c.PutModel(ctx, store.Model{Name: "press-4/*", Spec: vector}); err != nil || m.Version != 1 {
		t.Fatalf("device-level model: %+v %v", m, err)
	}
	for _, bad := range []struct {
		name, spec, says string
	}{
		{"press-4/*", `{"kind":"ewma_z"}`, "scores one metric"},
		{"press-4/load", string(vector), "DEVICE/*"},
		{"default", string(vector), "DEVICE/*"},
		{"press-4/*", `{"kind":"mahalanobis","params":{"metrics":["load"]}}`, "at least two"},
		{"default", `{"kind":"ewma_z","param":{"alpha":0.1}}`, `unknown field "param"`},
		{"default", `{"kind":"robust_z","params":{"window":1099511627776}}`, "at most"},
	} {
		_, err := c.PutModel(ctx, store.Model{Name: bad.name, Spec: json.RawMessage(bad.spec)})
		if code(err) != http.StatusBadRequest || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("%s %s: %v, want 400 saying %q", bad.name, bad.spec, err, bad.says)
		}
	}
}

// TestQueryArrow streams a result far past the JSON row limit as Arrow
// record batches, every row once and in order; refuses what the JSON
// query refuses, and a limit (the SQL bounds an Arrow answer); answers
// "Accept: application/vnd.apache.arrow.stream" with an IPC stream; and
// reports a query that fails while it runs instead of ending the stream
// as if it were complete.
func TestQueryArrow(t *testing.T) {
	c, _ := serve(t, "")
	ctx := context.Background()
	const n = 250_000 // 25 × DefaultRowLimit
	rows, batches := 0, 0
	var sum float64
	err := c.QueryArrow(ctx, fmt.Sprintf("SELECT range AS i, range / 2 AS half, 'r' || range AS name FROM range(%d)", n), func(rec arrow.RecordBatch) error {
		if got := rec.Schema().Field(0).Type.ID(); got != arrow.INT64 {
			return fmt.Errorf("column i is %s, want int64", rec.Schema().Field(0).Type)
		}
		is, halves := rec.Column(0).(*array.Int64), rec.Column(1).(*array.Float64)
		for r := range int(rec.NumRows()) {
			if is.Value(r) != int64(rows) || halves.Value(r) != float64(rows)/2 {
				return fmt.Errorf("row %d: i=%d half=%v", rows, is.Value(r), halves.Value(r))
			}
			sum += halves.Value(r)
			rows++
		}
		batches++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(n) * float64(n-1) / 4; rows != n || sum != want {
		t.Fatalf("%d rows summing to %v in %d batches, want %d rows summing to %v", rows, sum, batches, n, want)
	}

	noop := func(arrow.RecordBatch) error { return nil }
	if err := c.QueryArrow(ctx, "DELETE FROM devices; SELECT 1", noop); code(err) != http.StatusBadRequest {
		t.Fatalf("a DELETE before a SELECT: %v", err)
	}
	if err := c.QueryArrow(ctx, "DROP TABLE devices", noop); code(err) != http.StatusBadRequest {
		t.Fatalf("DROP: %v", err)
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/query", QueryRequest{SQL: "SELECT 1", Format: "arrow", Limit: 5}, nil); code(err) != http.StatusBadRequest {
		t.Fatalf("a limit with format arrow: %v", err)
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/query", QueryRequest{SQL: "SELECT 1", Format: "csv"}, nil); code(err) != http.StatusBadRequest {
		t.Fatalf("an unknown format: %v", err)
	}
	// An error raised while the query runs, after rows have been produced.
	failing := fmt.Sprintf("SELECT CASE WHEN range < %d THEN range ELSE error('sensor table broke') END AS i FROM range(%d)", n/2, n)
	if err := c.QueryArrow(ctx, failing, noop); err == nil || !strings.Contains(err.Error(), "sensor table broke") {
		t.Fatalf("a query failing midway: %v", err)
	}

	req, _ := http.NewRequest(http.MethodGet, c.BaseURL+"/api/v1/query?sql=SELECT%2042%20AS%20answer", nil)
	req.Header.Set("Accept", ArrowStream)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ArrowStream {
		t.Fatalf("Content-Type %q, want %q", ct, ArrowStream)
	}
	rdr, err := ipc.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Release()
	if !rdr.Next() || rdr.RecordBatch().NumRows() != 1 || rdr.RecordBatch().Schema().Field(0).Name != "answer" {
		t.Fatalf("GET with Accept: %v", rdr.Err())
	}
}

// failsMidway is a store whose Arrow queries send one batch and then fail,
// as a query can while DuckDB produces its result.
type failsMidway struct{ *store.Store }

func (failsMidway) QueryArrow(_ context.Context, _ string, fn func(array.RecordReader) error) error {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues([]int64{1, 2, 3}, nil)
	col := b.NewArray()
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "i", Type: arrow.PrimitiveTypes.Int64}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 3)
	defer rec.Release()
	rdr, err := array.NewRecordReader(schema, []arrow.RecordBatch{rec})
	if err != nil {
		return err
	}
	defer rdr.Release()
	return fn(brokenReader{rdr})
}

// brokenReader ends its batches with an error.
type brokenReader struct{ array.RecordReader }

func (brokenReader) Err() error { return errors.New("disk read failed") }

// TestQueryArrowErrorAfterFirstBatch: when a query fails after the server
// has sent its first batch (and its 200 status), the answer is broken off
// before its end, so that neither the Go client nor a plain HTTP reader
// (as pyarrow over requests is) can take the rows sent so far for the
// whole answer.
func TestQueryArrowErrorAfterFirstBatch(t *testing.T) {
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(Handler(failsMidway{st}, func() any { return nil }, "", slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL}
	rows := 0
	err = c.QueryArrow(context.Background(), "SELECT 1", func(rec arrow.RecordBatch) error {
		rows += int(rec.NumRows())
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "broke off") || rows > 3 {
		t.Fatalf("%d rows, error %v; want at most the 3 rows sent, then an error", rows, err)
	}
	resp, err := http.Get(srv.URL + "/api/v1/query?format=arrow&sql=SELECT%201")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a plain HTTP reader read the broken answer to a clean end")
	}
}

// getQuery runs sql through GET /api/v1/query, as Grafana or curl would,
// and returns the status and the raw body.
func getQuery(t *testing.T, c *Client, sql string) (int, string) {
	t.Helper()
	resp, err := http.Get(c.BaseURL + "/api/v1/query?sql=" + url.QueryEscape(sql))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// rowsOf returns the rows of a JSON query answer as JSON text.
func rowsOf(t *testing.T, body string) string {
	t.Helper()
	var res struct{ Rows json.RawMessage }
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("answer %q is not JSON: %v", body, err)
	}
	return string(res.Rows)
}

// TestQueryNonFiniteFloats: a JSON answer holding a NaN or an infinity is
// a whole answer, the value spelt "NaN", "Infinity" or "-Infinity" as
// DuckDB's to_json spells it (JSON has no such numbers), at top level and
// nested. It used to be a 200 with an empty body, which vigil query
// reported as "EOF".
func TestQueryNonFiniteFloats(t *testing.T) {
	c, _ := serve(t, "")
	for _, tc := range []struct{ sql, rows string }{
		{"SELECT 1/0", `[["Infinity"]]`},
		{"SELECT -1/0", `[["-Infinity"]]`},
		{"SELECT 'nan'::DOUBLE", `[["NaN"]]`},
		{"SELECT [1, 'nan'::DOUBLE]", `[[[1,"NaN"]]]`},
		{"SELECT 'inf'::FLOAT, {'x': -1/0}, MAP {'k': 'nan'::DOUBLE}", `[["Infinity",{"x":"-Infinity"},{"k":"NaN"}]]`},
	} {
		status, body := getQuery(t, c, tc.sql)
		if status != http.StatusOK {
			t.Errorf("%s: %d %q, want 200", tc.sql, status, body)
			continue
		}
		if got := rowsOf(t, body); got != tc.rows {
			t.Errorf("%s: rows %s, want %s", tc.sql, got, tc.rows)
		}
		if _, err := c.Query(context.Background(), tc.sql, 0); err != nil {
			t.Errorf("%s through the client: %v", tc.sql, err)
		}
	}
}

// TestWriteJSONUnencodable: an answer that cannot be encoded as JSON is a
// 500 saying so, never the intended status with an empty body.
func TestWriteJSONUnencodable(t *testing.T) {
	for _, v := range []any{math.NaN(), map[string]any{"c": make(chan int)}} {
		rec := httptest.NewRecorder()
		writeJSON(rec, http.StatusOK, v)
		var eb ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); rec.Code != http.StatusInternalServerError || err != nil || !strings.Contains(eb.Error, "could not encode") {
			t.Errorf("%v: %d %q; want 500 with an error saying the answer could not be encoded", v, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusCreated, map[string]int{"n": 1})
	if rec.Code != http.StatusCreated || rec.Body.String() != `{"n":1}`+"\n" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("an encodable answer: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}
}

// TestQueryBlobAndUUID: a BLOB reads back over JSON as base64 of its exact
// bytes (a dead letter's body, say, which need not be UTF-8: it used to
// come back with U+FFFD for each invalid byte), and a UUID as its text, at
// top level and nested.
func TestQueryBlobAndUUID(t *testing.T) {
	c, st := serve(t, "")
	ctx := context.Background()
	raw := []byte{0xFF, 0x00, 0xAB}
	dl := store.DeadLetter{Received: time.Now(), Device: "pump-7", Source: "devices/pump-7/messages/events/", Reason: "not JSON", Body: raw}
	if err := st.Commit(ctx, store.Batch{DeadLetters: []store.DeadLetter{dl}}); err != nil {
		t.Fatal(err)
	}
	status, body := getQuery(t, c, "SELECT body FROM dead_letters")
	var res struct{ Rows [][]string }
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusOK || err != nil || len(res.Rows) != 1 {
		t.Fatalf("dead letter body: %d %q (%v)", status, body, err)
	}
	if got, err := base64.StdEncoding.DecodeString(res.Rows[0][0]); err != nil || !bytes.Equal(got, raw) {
		t.Errorf("dead letter body %q decodes to %x (%v), want %x", res.Rows[0][0], got, err, raw)
	}

	const id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	sql := `SELECT '` + id + `'::UUID, ['` + id + `'::UUID], {'id': '` + id + `'::UUID, 'body': '\xFF\x00\xAB'::BLOB}, MAP {1: '\xFF'::BLOB}`
	status, body = getQuery(t, c, sql)
	if want := `[["` + id + `",["` + id + `"],{"body":"/wCr","id":"` + id + `"},{"1":"/w=="}]]`; status != http.StatusOK || rowsOf(t, body) != want {
		t.Errorf("%s: %d %s, want rows %s", sql, status, body, want)
	}
}

// TestQueryLimit: a negative limit is refused with what the limit may be,
// not quietly taken for the default; 0 (or none) is the default.
func TestQueryLimit(t *testing.T) {
	c, _ := serve(t, "")
	ctx := context.Background()
	if _, err := c.Query(ctx, "SELECT 1", -1); code(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("limit -1: %v, want 400 saying the limit must be positive", err)
	}
	resp, err := http.Get(c.BaseURL + "/api/v1/query?limit=-5&sql=SELECT%201")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "must be positive") {
		t.Errorf("GET limit=-5: %d %s, want 400 saying the limit must be positive", resp.StatusCode, body)
	}
	res, err := c.Query(ctx, fmt.Sprintf("SELECT * FROM range(%d)", DefaultRowLimit+1), 0)
	if err != nil || len(res.Rows) != DefaultRowLimit || !res.Truncated {
		t.Errorf("limit 0: %d rows, truncated %v (%v); want the default %d, truncated", len(res.Rows), res.Truncated, err, DefaultRowLimit)
	}
}
