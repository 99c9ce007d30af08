package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigil-iot/vigil/store"
)

func serve(t *testing.T, token string) (*Client, *store.Store) {
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
// and only that; other names take series models only.
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
	} {
		_, err := c.PutModel(ctx, store.Model{Name: bad.name, Spec: json.RawMessage(bad.spec)})
		if code(err) != http.StatusBadRequest || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("%s %s: %v, want 400 saying %q", bad.name, bad.spec, err, bad.says)
		}
	}
}
