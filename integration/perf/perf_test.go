package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
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
// (nginx where installed) and a workload of each kind, so that it keeps
// compiling and working: every variant has its rows, the ratios, the idle
// RSS and the mass-close probe have real figures.
func TestHarnessEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxy child processes and runs timed traffic")
	}
	md := runHarnessForTest(t, "-duration", "100ms", "-rounds", "1", "-idle", "50", "-mass-close", "50",
		"-workloads", "pingpong-128-1,pingpong-1k-4,stream-64k,idle,idle-after-1k,mass-close")
	for _, want := range []string{
		"Command: `go run ./integration/perf -duration 100ms",
		"| pingpong-1k-4 | wsgate |", "| stream-64k | caddy |",
		"## Memory per idle session (-idle 50 sessions asked)", "## Mass close (-mass-close 50 sessions asked)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, v := range testVariants(t) {
		row := "| pingpong-128-1 | " + v + " |"
		if got := cell(t, md, row, "msgs/s"); v != baseline && v != "direct" && !strings.Contains(got, "×)") {
			t.Errorf("%s: msgs/s %q without a ratio to tcp", row, got)
		}
		if v == "direct" {
			continue
		}
		if b := cellBytes(t, md, "| idle-after-1k | "+v+" | 50 |", "proxy RSS/session"); !(b > 0) {
			t.Errorf("idle-after-1k, %s: proxy RSS/session %v, want > 0", v, b)
		}
		mass := "| mass-close | " + v + " | 50 |"
		if b := cellBytes(t, md, mass, "proxy RSS before"); !(b > 0) {
			t.Errorf("mass-close, %s: proxy RSS before %v, want > 0", v, b)
		}
		if n, err := strconv.Atoi(cell(t, md, mass, "probe echoes")); err != nil || n == 0 {
			t.Errorf("mass-close, %s: the probe got no echo (%q)", v, cell(t, md, mass, "probe echoes"))
		}
		if got := cell(t, md, mass, "probe p99"); got == "–" {
			t.Errorf("mass-close, %s: no probe p99", v)
		}
	}
}

// TestHarnessTLS runs one short measurement and one idle workload through
// the Caddy peer (and nginx where installed) with a TLS client leg.
func TestHarnessTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxy child processes and runs timed traffic")
	}
	md := runHarnessForTest(t, "-tls", "-duration", "100ms", "-rounds", "1", "-idle", "20",
		"-variants", "caddy,wsgate,nginx", "-workloads", "pingpong-128-1,idle-after-1k")
	for _, v := range testVariants(t) {
		if (v == "caddy" || v == "nginx" || v == "tcp") && !strings.Contains(md, v+" TLS 1.3 ") {
			t.Errorf("report does not say %s's client leg is TLS 1.3", v)
		}
	}
	if !strings.Contains(md, "**TLS client leg (-tls)**") {
		t.Errorf("report does not say the client leg is TLS")
	}
	for _, v := range testVariants(t) {
		if !slices.Contains([]string{"tcp", "caddy", "wsgate", "nginx"}, v) {
			continue
		}
		row := "| pingpong-128-1 | " + v + "+tls |"
		if got := cell(t, md, row, "proxy CPU/msg"); got == "–" {
			t.Errorf("%s: no proxy CPU/msg", row)
		}
		if b := cellBytes(t, md, "| idle-after-1k | "+v+"+tls | 20 |", "proxy RSS/session"); !(b > 0) {
			t.Errorf("idle-after-1k, %s+tls: proxy RSS/session %v, want > 0", v, b)
		}
	}
}

// runHarnessForTest runs the harness with args and returns its report.
func runHarnessForTest(t *testing.T, args ...string) string {
	t.Helper()
	start := time.Now()
	var out, log bytes.Buffer
	if err := run(args, &out, &log); err != nil {
		t.Fatalf("harness: %v\nlog:\n%s", err, log.String())
	}
	t.Logf("harness took %s\n%s", time.Since(start).Round(time.Millisecond), out.String())
	return out.String()
}

// testVariants are the variants a default run has here: all, but nginx only
// where it is installed.
func testVariants(t *testing.T) []string {
	if nginxInstalled() {
		return variantNames
	}
	t.Logf("%s not installed: the nginx variant is not checked", nginxPath)
	return slices.DeleteFunc(slices.Clone(variantNames), func(v string) bool { return v == "nginx" })
}

// cell returns the cell of the table row starting with rowPrefix in the
// column whose header contains column.
func cell(t *testing.T, md, rowPrefix, column string) string {
	t.Helper()
	var header []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| workload |") {
			header = strings.Split(line, "|")
		}
		if !strings.HasPrefix(line, rowPrefix) {
			continue
		}
		row := strings.Split(line, "|")
		for i, h := range header {
			if strings.Contains(h, column) && i < len(row) {
				return strings.TrimSpace(row[i])
			}
		}
		t.Fatalf("no column %q for row %q", column, rowPrefix)
	}
	t.Fatalf("report has no row %q", rowPrefix)
	return ""
}

// cellBytes is a cell written by fmtBytes, in bytes (NaN for "–").
func cellBytes(t *testing.T, md, rowPrefix, column string) float64 {
	t.Helper()
	s := cell(t, md, rowPrefix, column)
	var v float64
	var unit string
	if _, err := fmt.Sscanf(s, "%g %s", &v, &unit); err != nil {
		return math.NaN()
	}
	switch unit {
	case "KiB":
		v *= 1 << 10
	case "MiB":
		v *= 1 << 20
	}
	return v
}

// TestParseFlags checks the workload names, the variant order and the
// flags a child gets.
func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-workloads", "pingpong-2k-3,stream-1m,idle,idle-after-16k,mass-drop", "-variants", "wsgate"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	w := o.workloads
	if len(w) != 5 || w[0].size != 2<<10 || w[0].sessions != 3 || w[1].size != 1<<20 || w[2].kind != kindIdle || w[2].size != 0 ||
		w[3].kind != kindIdle || w[3].size != 16<<10 || w[4].kind != kindMassClose || !w[4].drop {
		t.Errorf("workloads: %+v", o.workloads)
	}
	if d, _ := parseFlags(nil, &bytes.Buffer{}); len(d.variants) != len(variantNames) || d.idle != 2000 || d.massClose != 5000 ||
		!slices.ContainsFunc(d.workloads, func(w workload) bool { return w.name == "mass-close" }) {
		t.Errorf("defaults: variants %v, -idle %d, -mass-close %d, workloads %v", d.variants, d.idle, d.massClose, d.workloads)
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
	child := childConfig{kind: "caddy", upstream: "127.0.0.1:1", copyBuffer: 64 << 10, certFile: "c.pem", keyFile: "k.pem", workDir: "/tmp/x"}
	if o, err := parseFlags(child.args(), &bytes.Buffer{}); err != nil || o.child != child {
		t.Errorf("a child started with %v gets %+v (%v)", child.args(), o.child, err)
	}
	for _, bad := range [][]string{{"-copy-buffer", "0"}, {"-idle", "0"}, {"-workloads", "idle-after-x"}} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
