package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/vigil-iot/vigil/store"
)

// Client calls a vigil server's HTTP API.
type Client struct {
	// BaseURL is the server, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// Token is sent as a bearer token when set.
	Token string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// StatusError is an error answer from the server.
type StatusError struct {
	Code    int
	Message string
}

// Error says what the server answered.
func (e *StatusError) Error() string { return fmt.Sprintf("vigil server: %d %s", e.Code, e.Message) }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	return dec.Decode(out)
}

// send makes a request with in as its JSON body and returns a successful
// response, whose body the caller closes, or the server's error.
func (c *Client) send(ctx context.Context, method, path string, in any, accept string) (*http.Response, error) {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is `vigil serve` running at %s?)", err, c.BaseURL)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var eb ErrorBody
		if json.NewDecoder(resp.Body).Decode(&eb) != nil || eb.Error == "" {
			eb.Error = resp.Status
		}
		return nil, &StatusError{Code: resp.StatusCode, Message: eb.Error}
	}
	return resp, nil
}

// QueryArrow runs read-only SQL on the server and hands fn every Arrow
// record batch of the result as it arrives: every row, with no limit, in
// the column types DuckDB gives (VARCHAR as a string array, BIGINT as
// int64, DOUBLE as float64, TIMESTAMP as a timestamp). A batch is valid
// only during fn (Retain it to keep it). An error fn returns stops the
// stream and is returned; so is one the server reports after its first
// batch.
func (c *Client) QueryArrow(ctx context.Context, sql string, fn func(arrow.RecordBatch) error) error {
	a, err := c.QueryArrowStream(ctx, sql)
	if err != nil {
		return err
	}
	defer a.Close()
	for a.Next() {
		if err := fn(a.RecordBatch()); err != nil {
			return err
		}
	}
	return a.Err()
}

// QueryArrowStream runs read-only SQL on the server and returns its Arrow
// answer to read: the schema at once, then the record batches as they
// arrive. Close it when done.
func (c *Client) QueryArrowStream(ctx context.Context, sql string) (*ArrowAnswer, error) {
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/query", QueryRequest{SQL: sql, Format: "arrow"}, ArrowStream)
	if err != nil {
		return nil, err
	}
	rdr, err := ipc.NewReader(resp.Body)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("query: reading the Arrow answer: %w", err)
	}
	return &ArrowAnswer{resp: resp, rdr: rdr}, nil
}

// ArrowAnswer is an Arrow query answer being read. Like an
// array.RecordReader: Next until false, the batch of each Next in
// RecordBatch (valid until the next Next), then Err.
type ArrowAnswer struct {
	resp *http.Response
	rdr  *ipc.Reader
	err  error
	done bool
}

// Schema returns the answer's columns.
func (a *ArrowAnswer) Schema() *arrow.Schema { return a.rdr.Schema() }

// Next moves to the next record batch and reports whether there is one.
func (a *ArrowAnswer) Next() bool {
	if a.done {
		return false
	}
	if a.rdr.Next() {
		return true
	}
	a.done = true
	err := a.rdr.Err()
	if err == nil {
		// The end of the IPC stream; the end of the HTTP answer must
		// follow, or the server broke it off.
		_, err = io.Copy(io.Discard, a.resp.Body)
	}
	if err != nil {
		a.err = fmt.Errorf("query: the Arrow answer broke off (the server's log says why): %w", err)
	}
	return false
}

// RecordBatch returns the batch Next moved to.
func (a *ArrowAnswer) RecordBatch() arrow.RecordBatch { return a.rdr.RecordBatch() }

// Err returns why the answer ended early, once Next has returned false:
// nil when every row arrived.
func (a *ArrowAnswer) Err() error { return a.err }

// Close releases the answer; reading stops there.
func (a *ArrowAnswer) Close() error {
	a.rdr.Release()
	return a.resp.Body.Close()
}

// Query runs read-only SQL on the server.
func (c *Client) Query(ctx context.Context, sql string, limit int) (*store.Result, error) {
	var res store.Result
	err := c.do(ctx, http.MethodPost, "/api/v1/query", QueryRequest{SQL: sql, Limit: limit}, &res)
	return &res, err
}

// AddDevice registers a device; an empty key asks the server for one.
func (c *Client) AddDevice(ctx context.Context, name, key string) (NewDevice, error) {
	var d NewDevice
	err := c.do(ctx, http.MethodPost, "/api/v1/devices", DeviceRequest{Name: name, Key: key}, &d)
	return d, err
}

// Devices lists the registered devices.
func (c *Client) Devices(ctx context.Context) ([]store.Device, error) {
	var ds []store.Device
	err := c.do(ctx, http.MethodGet, "/api/v1/devices", nil, &ds)
	return ds, err
}

// SetDeviceStatus enables or disables a device.
func (c *Client) SetDeviceStatus(ctx context.Context, name string, st store.DeviceStatus) (store.Device, error) {
	var verb string
	switch st {
	case store.Enabled:
		verb = "enable"
	case store.Disabled:
		verb = "disable"
	default:
		return store.Device{}, errors.New("status must be enabled or disabled")
	}
	var d store.Device
	err := c.do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(name)+"/"+verb, nil, &d)
	return d, err
}

// Status returns the server's status document.
func (c *Client) Status(ctx context.Context) (map[string]any, error) {
	var m map[string]any
	err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &m)
	return m, err
}

// PutModel registers a new model version and returns it with its version.
func (c *Client) PutModel(ctx context.Context, m store.Model) (store.Model, error) {
	var out store.Model
	err := c.do(ctx, http.MethodPost, "/api/v1/models", m, &out)
	return out, err
}

// Models lists the active model versions, or every version when all is set.
func (c *Client) Models(ctx context.Context, all bool) ([]store.Model, error) {
	var ms []store.Model
	path := "/api/v1/models"
	if all {
		path += "?all=true"
	}
	err := c.do(ctx, http.MethodGet, path, nil, &ms)
	return ms, err
}

// ActivateModel makes an existing version active (rollback).
func (c *Client) ActivateModel(ctx context.Context, name string, version int) error {
	return c.do(ctx, http.MethodPost, "/api/v1/models/activate", ActivateRequest{Name: name, Version: version}, nil)
}
