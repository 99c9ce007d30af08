package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/store"
)

// DefaultRowLimit is how many rows a query returns when the request names no
// limit; MaxRowLimit is the most it may ask for.
const (
	DefaultRowLimit = 10_000
	MaxRowLimit     = 1_000_000
)

// Backend is what the API serves; *store.Store implements it.
type Backend interface {
	Query(ctx context.Context, sql string, limit int) (*store.Result, error)
	QueryArrow(ctx context.Context, sql string, fn func(array.RecordReader) error) error
	AddDevice(ctx context.Context, name, key string) (store.Device, error)
	SetDeviceStatus(ctx context.Context, name string, st store.DeviceStatus) (store.Device, error)
	Devices() []store.Device
	PutModel(ctx context.Context, m *store.Model) error
	ActivateModel(ctx context.Context, name string, version int) error
	Models(ctx context.Context, all bool) ([]store.Model, error)
}

// ActivateRequest is the body of POST /api/v1/models/activate.
type ActivateRequest struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// QueryRequest is the body of POST /api/v1/query.
type QueryRequest struct {
	SQL string `json:"sql"`
	// Limit is the most rows a JSON answer holds: 0 (or none) for
	// DefaultRowLimit, at most MaxRowLimit. A negative limit is refused.
	Limit int `json:"limit,omitempty"`
	// Format is "json" (the default: at most Limit rows in one JSON
	// document) or "arrow": every row, streamed as an Apache Arrow IPC
	// stream (ArrowStream) that pyarrow, polars or arrow-go read as it
	// arrives. Asking with "Accept: application/vnd.apache.arrow.stream"
	// is the same as "arrow".
	Format string `json:"format,omitempty"`
}

// ArrowStream is the media type of Arrow IPC stream answers.
const ArrowStream = "application/vnd.apache.arrow.stream"

// DeviceRequest is the body of POST /api/v1/devices. An empty Key asks the
// server to generate one.
type DeviceRequest struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
}

// NewDevice is the answer to POST /api/v1/devices; the key is shown only
// here.
type NewDevice struct {
	store.Device
	Key string `json:"key"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

// Handler returns the API's HTTP handler. status is served at
// /api/v1/status. A non-empty token must be presented as
// "Authorization: Bearer TOKEN".
func Handler(b Backend, status func() any, token string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	h := &handler{b: b, log: log}
	mux.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, status())
	})
	mux.HandleFunc("GET /api/v1/query", h.queryGet)
	mux.HandleFunc("POST /api/v1/query", h.queryPost)
	mux.HandleFunc("GET /api/v1/devices", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.Devices())
	})
	mux.HandleFunc("POST /api/v1/devices", h.addDevice)
	mux.HandleFunc("POST /api/v1/devices/{name}/disable", h.setStatus(store.Disabled))
	mux.HandleFunc("POST /api/v1/devices/{name}/enable", h.setStatus(store.Enabled))
	mux.HandleFunc("GET /api/v1/models", h.listModels)
	mux.HandleFunc("POST /api/v1/models", h.putModel)
	mux.HandleFunc("POST /api/v1/models/activate", h.activateModel)
	return RequireToken(token, mux)
}

// RequireToken returns h behind the API token: a request without
// "Authorization: Bearer TOKEN" is answered 401 with what to send. An
// empty token lets every request through.
func RequireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong API token: send Authorization: Bearer <token>"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

type handler struct {
	b   Backend
	log *slog.Logger
}

func (h *handler) queryGet(w http.ResponseWriter, r *http.Request) {
	req := QueryRequest{SQL: r.URL.Query().Get("sql"), Format: r.URL.Query().Get("format")}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit %q is not an integer", l))
			return
		}
		req.Limit = n
	}
	h.query(w, r, req)
}

func (h *handler) queryPost(w http.ResponseWriter, r *http.Request) {
	var req QueryRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf(`body must be JSON {"sql": "...", "limit": N}: %w`, err))
		return
	}
	h.query(w, r, req)
}

func (h *handler) query(w http.ResponseWriter, r *http.Request, req QueryRequest) {
	if strings.TrimSpace(req.SQL) == "" {
		writeError(w, http.StatusBadRequest, errors.New(`no SQL: send {"sql": "SELECT ..."} or the query parameter sql`))
		return
	}
	if req.Format == "" && strings.Contains(r.Header.Get("Accept"), ArrowStream) {
		req.Format = "arrow"
	}
	switch req.Format {
	case "", "json":
	case "arrow":
		if req.Limit != 0 {
			writeError(w, http.StatusBadRequest, errors.New("limit applies to JSON answers; an Arrow answer streams every row: put a LIMIT in the SQL to bound it"))
			return
		}
		h.queryArrow(w, r, req.SQL)
		return
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf(`format %q: want "json" or "arrow"`, req.Format))
		return
	}
	limit := req.Limit
	if limit < 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("limit %d: the row limit must be positive (or 0 or none for the default %d, at most %d)", limit, DefaultRowLimit, MaxRowLimit))
		return
	}
	if limit == 0 {
		limit = DefaultRowLimit
	}
	if limit > MaxRowLimit {
		writeError(w, http.StatusBadRequest, fmt.Errorf("limit %d is above the maximum %d", limit, MaxRowLimit))
		return
	}
	res, err := h.b.Query(r.Context(), req.SQL, limit)
	if err != nil {
		// A refused or malformed statement is the caller's to fix.
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// queryArrow streams the result of sql as an Arrow IPC stream. An error
// before the first batch is an error answer as for JSON. One after it (its
// 200 status is gone with the first batch) breaks the connection off
// before the end of the answer, so that no reader — pyarrow, curl, the Go
// client — can take the rows sent so far for all of them; the server logs
// why.
func (h *handler) queryArrow(w http.ResponseWriter, r *http.Request, sql string) {
	started := false
	err := h.b.QueryArrow(r.Context(), sql, func(rdr array.RecordReader) error {
		w.Header().Set("Content-Type", ArrowStream)
		started = true
		iw := ipc.NewWriter(w, ipc.WithSchema(rdr.Schema()))
		flush := func() {}
		if f, ok := w.(http.Flusher); ok {
			flush = f.Flush
		}
		for rdr.Next() {
			if err := iw.Write(rdr.RecordBatch()); err != nil {
				return err
			}
			flush() // the client reads each batch as it is produced
		}
		if err := rdr.Err(); err != nil {
			return err
		}
		return iw.Close()
	})
	switch {
	case err == nil:
	case !started:
		writeError(w, http.StatusBadRequest, err)
	default:
		h.log.Warn("arrow answer broken off: the query failed after its first batch", "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (h *handler) addDevice(w http.ResponseWriter, r *http.Request) {
	var req DeviceRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf(`body must be JSON {"name": "...", "key": "..."}: %w`, err))
		return
	}
	if req.Key == "" {
		req.Key = store.NewDeviceKey()
	}
	d, err := h.b.AddDevice(r.Context(), req.Name, req.Key)
	switch {
	case errors.Is(err, store.ErrDeviceExists):
		writeError(w, http.StatusConflict, err)
	case err != nil:
		writeError(w, http.StatusBadRequest, err)
	default:
		writeJSON(w, http.StatusCreated, NewDevice{Device: d, Key: req.Key})
	}
}

func (h *handler) setStatus(st store.DeviceStatus) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, err := h.b.SetDeviceStatus(r.Context(), r.PathValue("name"), st)
		switch {
		case errors.Is(err, store.ErrUnknownDevice):
			writeError(w, http.StatusNotFound, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, d)
		}
	}
}

func (h *handler) listModels(w http.ResponseWriter, r *http.Request) {
	ms, err := h.b.Models(r.Context(), r.URL.Query().Get("all") == "true")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if ms == nil {
		ms = []store.Model{}
	}
	writeJSON(w, http.StatusOK, ms)
}

// putModel registers a new model version. The spec must build a detector
// of the kind its name calls for (a vector model for DEVICE/*), so a
// version that could not run never becomes active.
func (h *handler) putModel(w http.ResponseWriter, r *http.Request) {
	var m store.Model
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&m); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf(`body must be JSON {"name": "default", "DEVICE/METRIC" or "DEVICE/*", "spec": {"kind": ...}, ...}: %w`, err))
		return
	}
	spec, err := models.ParseSpec(m.Spec)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("spec: %w", err))
		return
	}
	if err := checkSpec(m.Name, spec); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := h.b.PutModel(r.Context(), &m); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

// checkSpec builds the model a registry name would run: a vector model
// for a device-level name (DEVICE/*), a series model for any other.
func checkSpec(name string, spec models.Spec) error {
	if _, ok := store.ModelDevice(name); ok {
		_, _, err := models.NewVector(spec)
		return err
	}
	_, err := models.New(spec)
	return err
}

func (h *handler) activateModel(w http.ResponseWriter, r *http.Request) {
	var req ActivateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf(`body must be JSON {"name": ..., "version": N}: %w`, err))
		return
	}
	err := h.b.ActivateModel(r.Context(), req.Name, req.Version)
	switch {
	case errors.Is(err, store.ErrNoSuchModel):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	default:
		writeJSON(w, http.StatusOK, req)
	}
}

// writeJSON answers code with v as JSON. It encodes v whole before it
// sends the status, so that a value that cannot be encoded is answered 500
// with what went wrong, never code with an empty or cut-off body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var body bytes.Buffer
	if err := json.NewEncoder(&body).Encode(v); err != nil {
		body.Reset()
		code = http.StatusInternalServerError
		msg := ErrorBody{Error: fmt.Sprintf("the server could not encode its answer as JSON (a server bug; please report it with the request): %v", err)}
		_ = json.NewEncoder(&body).Encode(msg) // an ErrorBody always encodes
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body.Bytes())
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, ErrorBody{Error: err.Error()})
}
