package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestDemoJSON runs `vigil demo --json` in-process and checks the contract
// of its last line.
func TestDemoJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for 20 s")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--devices", "5", "--duration", "20s", "--interval", "200ms", "--fault-after", "5s", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	var sum map[string]int64
	if err := json.Unmarshal([]byte(lastLine(out.String())), &sum); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{"devices", "readings_stored", "anomalies", "commands_sent", "commands_acked", "devices_recovered", "dead_letters"} {
		if _, ok := sum[k]; !ok {
			t.Errorf("summary lacks %q: %v", k, sum)
		}
	}
	// 5 devices at 5 messages/s of 2 readings for ~20 s; one of them faulty.
	if sum["devices"] != 5 || sum["readings_stored"] < 500 || sum["dead_letters"] != 0 {
		t.Errorf("summary %v", sum)
	}
	if sum["anomalies"] < 1 || sum["commands_sent"] != sum["commands_acked"] || sum["commands_acked"] < 1 || sum["devices_recovered"] != 1 {
		t.Errorf("the faulty device was not commanded, acknowledged and recovered: %v", sum)
	}
	if n := strings.Count(errOut.String(), "readings/s"); n < 15 {
		t.Errorf("%d status lines in 20 s, want about one a second", n)
	}
}

// TestDemoInterrupted: cancelling the demo (what SIGINT does through
// signal.NotifyContext) ends it cleanly with its summary and exit code 0.
func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"demo", "--devices", "3", "--duration", "0", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	var sum map[string]int64
	if err := json.Unmarshal([]byte(lastLine(out.String())), &sum); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	if sum["devices"] != 3 || sum["readings_stored"] == 0 {
		t.Errorf("summary %v", sum)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"demo", "--no-such-flag"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if errOut.Len() == 0 {
			t.Errorf("%v: nothing said on stderr", args)
		}
	}
}
