package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPDevice is one simulated device that speaks only HTTP to vigil's
// device gateway: every interval it posts a reading and asks for a command
// (without waiting), carries a command out and answers it.
type HTTPDevice struct {
	core
	base   string // e.g. http://127.0.0.1:8080
	client *http.Client
}

// NewHTTPDevice returns a device posting to the vigil at base (its HTTP
// address, "http://HOST:PORT" or "https://…"); client nil means
// http.DefaultClient.
func NewHTTPDevice(cfg DeviceConfig, base string, client *http.Client) *HTTPDevice {
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTPDevice{core: core{cfg: cfg}, base: strings.TrimSuffix(base, "/"), client: client}
}

// Run posts and polls until ctx ends. A reading the gateway did not store
// (an error status or no answer) is counted as failed and not resent; it
// returns an error only when vigil refuses the device's credentials.
func (d *HTTPDevice) Run(ctx context.Context) error {
	m := d.newMachine(time.Now())
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	seq := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			seq++
			if err := d.post(ctx, d.sample(m, now), m.messageID(seq)); err != nil {
				if errors.Is(err, errRefused) {
					return err
				}
				continue
			}
			if err := d.pollOnce(ctx, m); errors.Is(err, errRefused) {
				return err
			}
		}
	}
}

// errRefused marks an answer that says the device may not connect.
var errRefused = errors.New("refused")

// do sends one request as the device and returns the status and body.
func (d *HTTPDevice) do(ctx context.Context, method, path, body string, header ...string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.base+"/devices/"+url.PathEscape(d.cfg.Name)+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(d.cfg.Name, d.cfg.Key)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return resp.StatusCode, b, fmt.Errorf("sim %s: %w: %s", d.cfg.Name, errRefused, b)
	}
	return resp.StatusCode, b, err
}

// post sends one telemetry message with message id id and counts it.
func (d *HTTPDevice) post(ctx context.Context, body, id string) error {
	code, resp, err := d.do(ctx, http.MethodPost, "/messages/events", body, "Message-Id", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil || code != http.StatusNoContent {
		d.stats.Failed++
		if err == nil {
			err = fmt.Errorf("sim %s: telemetry answered %d: %s", d.cfg.Name, code, resp)
		}
		return err
	}
	d.stats.Messages++
	d.stats.Readings += 2 // a sample is a temperature and a vibration
	return nil
}

// pollOnce asks for a command without waiting and, if one comes, carries
// it out and answers it.
func (d *HTTPDevice) pollOnce(ctx context.Context, m *machine) error {
	code, body, err := d.do(ctx, http.MethodGet, "/messages/deviceBound?wait=0", "")
	if err != nil || code != http.StatusOK {
		return err
	}
	var c command
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
		return fmt.Errorf("sim %s: command %s: %v", d.cfg.Name, body, err)
	}
	status, detail := d.command(m, c, time.Now())
	path := "/messages/deviceBound/" + url.PathEscape(c.ID) + "?detail=" + url.QueryEscape(detail)
	if status == "rejected" {
		path += "&reject"
	}
	if code, _, err := d.do(ctx, http.MethodDelete, path, ""); err != nil || code != http.StatusNoContent {
		return err
	}
	d.mu.Lock()
	d.stats.Acknowledged++
	d.mu.Unlock()
	return nil
}

// HTTPFleet is a set of simulated HTTP devices.
type HTTPFleet struct {
	Devices []*HTTPDevice
}

// NewHTTPFleet builds the devices of cfg (cfg.Addr is not used) posting to
// base; key returns each device's key (they must be registered first).
func NewHTTPFleet(cfg FleetConfig, base string, client *http.Client, key func(name string) string) (*HTTPFleet, error) {
	f, err := NewFleet(cfg, key)
	if err != nil {
		return nil, err
	}
	return HTTPFleetOf(f, base, client)
}

// HTTPFleetOf makes the devices of f, with their names, keys and faults,
// HTTP devices posting to base.
func HTTPFleetOf(f *Fleet, base string, client *http.Client) (*HTTPFleet, error) {
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("sim: http address %q: want http://HOST:PORT or https://HOST:PORT", base)
	}
	out := &HTTPFleet{}
	for _, d := range f.Devices {
		out.Devices = append(out.Devices, NewHTTPDevice(d.cfg, base, client))
	}
	return out, nil
}

// Run runs every device until ctx ends and returns the errors of devices
// vigil refused.
func (f *HTTPFleet) Run(ctx context.Context) error {
	return runStaggered(ctx, len(f.Devices), func(i int) (time.Duration, func(context.Context) error) {
		return f.Devices[i].cfg.Interval, f.Devices[i].Run
	})
}

// Totals sums the stats of all devices.
func (f *HTTPFleet) Totals() Stats {
	return sumStats(len(f.Devices), func(i int) Stats { return f.Devices[i].Stats() })
}
