package rabbittest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// Broker is the RabbitMQ node .ci/rabbitmq runs; tests read where it is
// from the variables `.ci/rabbitmq env` prints.
type Broker struct {
	URL string // vigil's own login (VIGIL_AMQP_URL)
	Ctl string // the .ci/rabbitmq script (VIGIL_RABBIT_CTL)
}

// Need returns the test broker, or skips the test when there is none
// (fails it when VIGIL_REQUIRE_AMQP=1). The test shares the broker with
// other tests, in this and other test processes, but not with one that
// stops it (NeedAlone): it waits until such a test is done.
func Need(tb testing.TB) *Broker {
	tb.Helper()
	b := find(tb)
	b.lock(tb, syscall.LOCK_SH)
	return b
}

// NeedAlone is Need for a test that stops or restarts the broker: it waits
// until no other test, in any test process, is using the broker, and keeps
// them waiting until it is done.
func NeedAlone(tb testing.TB) *Broker {
	tb.Helper()
	b := find(tb)
	b.lock(tb, syscall.LOCK_EX)
	return b
}

// lock takes a file lock (shared or exclusive) on the broker for the rest
// of the test. go test runs packages in parallel processes, so a lock in
// memory would not do.
func (b *Broker) lock(tb testing.TB, how int) {
	tb.Helper()
	sum := sha256.Sum256([]byte(b.URL))
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "vigil-rabbittest-"+hex.EncodeToString(sum[:6])+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		tb.Fatalf("broker lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		tb.Fatalf("broker lock: %v", err)
	}
	tb.Cleanup(func() { f.Close() }) // closing the file releases the lock
}

func find(tb testing.TB) *Broker {
	tb.Helper()
	b := &Broker{URL: os.Getenv("VIGIL_AMQP_URL"), Ctl: os.Getenv("VIGIL_RABBIT_CTL")}
	if b.URL == "" || b.Ctl == "" {
		msg := `no RabbitMQ for this test: run ".ci/rabbitmq start && eval \"$(.ci/rabbitmq env)\"" (sets VIGIL_AMQP_URL and VIGIL_RABBIT_CTL)`
		if os.Getenv("VIGIL_REQUIRE_AMQP") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return b
}

// Run runs the .ci/rabbitmq script with args (start, stop, ctl ...) and
// returns what it printed.
func (b *Broker) Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(b.Ctl, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", b.Ctl, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// QueueDepth returns how many messages the broker holds in queue on vhost
// (ready, and delivered but not settled).
func (b *Broker) QueueDepth(tb testing.TB, vhost, queue string) int {
	tb.Helper()
	out := b.Run(tb, "ctl", "list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages")
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				tb.Fatalf("list_queues: %q: %v", line, err)
			}
			return n
		}
	}
	tb.Fatalf("list_queues has no queue %q:\n%s", queue, out)
	return 0
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	p := make([]byte, n)
	_, _ = rand.Read(p)
	return hex.EncodeToString(p)
}

// Provision creates a fresh virtual host on which vigil's user and one
// broker user per device name (password = its key) have every
// permission, in one rabbitmqctl call, and deletes the vhost at the end of
// the test. Device users are left behind in the test broker.
func (b *Broker) Provision(tb testing.TB, devices ...string) (vhost string, keys map[string]string) {
	tb.Helper()
	u, err := url.Parse(b.URL)
	if err != nil {
		tb.Fatal(err)
	}
	vhost = "test-" + RandomHex(6)
	keys = map[string]string{}
	type user struct {
		Name     string   `json:"name"`
		Password string   `json:"password"`
		Tags     []string `json:"tags"`
	}
	type perm struct {
		User      string `json:"user"`
		VHost     string `json:"vhost"`
		Configure string `json:"configure"`
		Write     string `json:"write"`
		Read      string `json:"read"`
	}
	defs := struct {
		Users       []user              `json:"users"`
		VHosts      []map[string]string `json:"vhosts"`
		Permissions []perm              `json:"permissions"`
	}{Users: []user{}, VHosts: []map[string]string{{"name": vhost}}} // [] not null: the import refuses null
	defs.Permissions = append(defs.Permissions, perm{u.User.Username(), vhost, ".*", ".*", ".*"})
	for _, d := range devices {
		keys[d] = RandomHex(12)
		defs.Users = append(defs.Users, user{d, keys[d], []string{}})
		defs.Permissions = append(defs.Permissions, perm{d, vhost, ".*", ".*", ".*"})
	}
	file := filepath.Join(tb.TempDir(), "definitions.json")
	data, _ := json.Marshal(defs)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	b.Run(tb, "ctl", "import_definitions", file)
	tb.Cleanup(func() {
		_ = exec.Command(b.Ctl, "ctl", "delete_vhost", vhost).Run()
	})
	// The import may finish after rabbitmqctl returns: wait until vigil's
	// user can open the vhost.
	deadline := time.Now().Add(15 * time.Second)
	for !func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := amqp.Dial(ctx, b.URL, &amqp.ConnOptions{HostName: "vhost:" + vhost})
		if err != nil {
			return false
		}
		c.Close()
		return true
	}() {
		if time.Now().After(deadline) {
			tb.Fatalf("vhost %s did not accept connections within 15 s", vhost)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return vhost, keys
}

// DeviceURL is the broker URL without vigil's credentials.
func (b *Broker) DeviceURL() string {
	u, _ := url.Parse(b.URL)
	u.User = nil
	return u.String()
}
