package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as the harness's proxy child: the harness
// re-executes its own binary (here, the test binary) with -serve-proxy.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString("perf child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHarnessEndToEnd runs the harness with tiny settings over every variant
// and a workload of each kind, so that it keeps compiling and working.
func TestHarnessEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxy child processes and runs timed traffic")
	}
	start := time.Now()
	var out, log bytes.Buffer
	args := []string{"-duration", "100ms", "-rounds", "1", "-idle", "50", "-workloads", "pingpong-128-1,pingpong-1k-4,stream-64k,idle"}
	if err := run(args, &out, &log); err != nil {
		t.Fatalf("harness: %v\nlog:\n%s", err, log.String())
	}
	t.Logf("harness took %s\n%s", time.Since(start).Round(time.Millisecond), out.String())
	md := out.String()
	for _, want := range []string{
		"Command: `go run ./integration/perf -duration 100ms",
		"| pingpong-128-1 | direct |", "| pingpong-128-1 | tcp |", "| pingpong-128-1 | copy |", "| pingpong-128-1 | wsgate |", "| pingpong-128-1 | gorilla |",
		"| pingpong-1k-4 | wsgate |", "| stream-64k | wsgate |",
		"## Memory per idle session (50 sessions asked)", "| wsgate | 50 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// The wsgate row has a proxy CPU figure and a ratio to tcp.
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| pingpong-128-1 | wsgate |") && !strings.Contains(line, "×)") {
			t.Errorf("wsgate row without ratios: %s", line)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-workloads", "pingpong-2k-3,stream-1m,idle", "-variants", "wsgate"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.workloads) != 3 || o.workloads[0].size != 2<<10 || o.workloads[0].sessions != 3 || o.workloads[1].size != 1<<20 || o.workloads[2].kind != kindIdle {
		t.Errorf("workloads: %+v", o.workloads)
	}
	if strings.Join(o.variants, ",") != "tcp,wsgate" {
		t.Errorf("variants %v: the tcp baseline must always run", o.variants)
	}
	if _, err := parseFlags([]string{"-workloads", "nope"}, &bytes.Buffer{}); err == nil {
		t.Error("unknown workload accepted")
	}
	if o.copyBuffer != 32<<10 {
		t.Errorf("copy buffer %d by default, want 32 KiB", o.copyBuffer)
	}
	if o, err := parseFlags([]string{"-copy-buffer", "1m"}, &bytes.Buffer{}); err != nil || o.copyBuffer != 1<<20 {
		t.Errorf("-copy-buffer 1m: %v", err)
	}
	if o, err := parseFlags([]string{"-serve-proxy", "copy", "-upstream", "127.0.0.1:1", "-copy-buffer", "64k"}, &bytes.Buffer{}); err != nil || o.copyBuffer != 64<<10 {
		t.Errorf("a child does not get -copy-buffer: %v", err)
	}
	if _, err := parseFlags([]string{"-copy-buffer", "0"}, &bytes.Buffer{}); err == nil {
		t.Error("-copy-buffer 0 accepted")
	}
}
