package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// mustUpstream returns an Upstream for raw.
func mustUpstream(t *testing.T, raw string) *Upstream {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &Upstream{URL: u}
}

// activeUp reports whether u is not marked down by active checks.
func activeUp(u *Upstream) bool { return u.Healthy(time.Now(), 0, 0) }

// echoUntilClose upgrades r and reads until the client closes.
var echoUntilClose = testkit.Upgrading(nil, func(c *wsmw.Conn, _ *http.Request) {
	for {
		if _, _, err := c.Read(context.Background(), nil); err != nil {
			return
		}
	}
})

func TestHealthCheckerMarksUpstreamsByRealHandshake(t *testing.T) {
	testkit.CheckGoroutines(t)

	good := httptest.NewServer(http.HandlerFunc(echoUntilClose))
	defer good.Close()
	var upgrading atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !upgrading.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		echoUntilClose(w, r)
	}))
	defer flaky.Close()
	closedAddr := testkit.FreeAddr(t) // refuses connections

	ups := []*Upstream{
		mustUpstream(t, testkit.WSURL(good.URL)),
		mustUpstream(t, testkit.WSURL(flaky.URL)+"/chat"),
		mustUpstream(t, "ws://"+closedAddr+"/"),
	}
	h := NewHealthChecker(ActiveHealth{Timeout: 2 * time.Second, Passes: 2}, func() []*Upstream { return ups }, nil)
	defer h.Stop()

	h.CheckNow(context.Background())
	for i, want := range []bool{true, false, false} {
		if got := activeUp(ups[i]); got != want {
			t.Errorf("after first round, upstream %d (%s) healthy = %v, want %v (last error %v)", i, ups[i].Address(), got, want, ups[i].lastProbeErr)
		}
	}
	if err := ups[1].lastProbeErr; !errors.Is(err, wsmw.ErrBadStatus) {
		t.Errorf("503 upstream: last probe error = %v, want ErrBadStatus", err)
	}
	if ups[2].lastProbeErr == nil {
		t.Errorf("closed address: no probe error recorded")
	}

	upgrading.Store(true)
	h.CheckNow(context.Background())
	if activeUp(ups[1]) {
		t.Fatalf("flaky upstream healthy after 1 pass, want Passes=2 first")
	}
	h.CheckNow(context.Background())
	if !activeUp(ups[1]) {
		t.Fatalf("flaky upstream still down after 2 passes (last error %v)", ups[1].lastProbeErr)
	}
	if !activeUp(ups[0]) || activeUp(ups[2]) {
		t.Fatalf("good/closed upstreams changed state: %v / %v", activeUp(ups[0]), activeUp(ups[2]))
	}

	h.Start() // its immediate round is aborted by the deferred Stop
}

// scriptedDial returns a Dial that answers each call with the next error of results.
func scriptedDial(results ...error) func(context.Context, string, http.Header) error {
	var mu sync.Mutex
	return func(context.Context, string, http.Header) error {
		mu.Lock()
		defer mu.Unlock()
		err := results[0]
		results = results[1:]
		return err
	}
}

func TestHealthCheckerFailsAndPassesThresholds(t *testing.T) {
	bad := errors.New("refused")
	tests := []struct {
		name          string
		fails, passes int
		results       []error
		wantUp        []bool // after each round
	}{
		{"defaults: one failure downs, one pass ups", 0, 0, []error{nil, bad, nil, bad}, []bool{true, false, true, false}},
		{"fails 2: one failure is tolerated", 2, 1, []error{bad, nil, bad, bad, nil}, []bool{true, true, true, false, true}},
		{"passes 3: recovery needs 3 in a row", 1, 3, []error{bad, nil, nil, bad, nil, nil, nil}, []bool{false, false, false, false, false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := mustUpstream(t, "ws://backend:8080/")
			h := NewHealthChecker(ActiveHealth{Fails: tt.fails, Passes: tt.passes, Dial: scriptedDial(tt.results...)},
				func() []*Upstream { return []*Upstream{u} }, nil)
			defer h.Stop()
			for i, want := range tt.wantUp {
				h.CheckNow(context.Background())
				if got := activeUp(u); got != want {
					t.Fatalf("after round %d (result %v): healthy = %v, want %v", i+1, tt.results[i], got, want)
				}
				if u.lastProbeErr != tt.results[i] {
					t.Fatalf("after round %d: lastProbeErr = %v, want %v", i+1, u.lastProbeErr, tt.results[i])
				}
			}
		})
	}
}

func TestHealthCheckerProbesConfiguredPathWithHeader(t *testing.T) {
	tests := []struct {
		upstream, path, want string
	}{
		{"ws://backend:8080", "", "ws://backend:8080/"},
		{"ws://backend:8080/chat?room=1", "", "ws://backend:8080/chat?room=1"},
		{"wss://backend/chat#frag", "/healthz?deep=1", "wss://backend/healthz?deep=1"},
		{"ws://backend/chat?room=1", "/healthz", "ws://backend/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.upstream+" "+tt.path, func(t *testing.T) {
			var gotURL string
			var gotHeader http.Header
			h := NewHealthChecker(ActiveHealth{
				Path:   tt.path,
				Header: http.Header{"X-Probe": {"1"}},
				Dial: func(ctx context.Context, u string, hdr http.Header) error {
					if _, ok := ctx.Deadline(); !ok {
						t.Errorf("probe context has no deadline")
					}
					gotURL, gotHeader = u, hdr
					return nil
				},
			}, func() []*Upstream { return []*Upstream{mustUpstream(t, tt.upstream)} }, nil)
			h.CheckNow(context.Background())
			if gotURL != tt.want {
				t.Errorf("probe URL = %q, want %q", gotURL, tt.want)
			}
			if gotHeader.Get("X-Probe") != "1" {
				t.Errorf("probe header = %v, want X-Probe: 1", gotHeader)
			}
		})
	}
}

func TestHealthCheckerInvalidPathFailsEveryProbe(t *testing.T) {
	u := mustUpstream(t, "ws://backend/")
	h := NewHealthChecker(ActiveHealth{Path: "/%zz", Dial: scriptedDial()}, func() []*Upstream { return []*Upstream{u} }, nil)
	h.CheckNow(context.Background())
	if activeUp(u) || u.lastProbeErr == nil {
		t.Fatalf("invalid probe path: healthy = %v, error = %v; want down with an error", activeUp(u), u.lastProbeErr)
	}
}

func TestHealthCheckerStartProbesOnePerUpstreamAndStopWaits(t *testing.T) {
	testkit.CheckGoroutines(t)

	fast, slow := mustUpstream(t, "ws://fast/"), mustUpstream(t, "ws://slow/")
	var fastCalls, slowCalls, slowInFlight, slowMax atomic.Int32
	var slowReturned atomic.Bool
	h := NewHealthChecker(ActiveHealth{
		Interval: 2 * time.Millisecond,
		Timeout:  time.Hour, // only Stop ends the slow probe
		Dial: func(ctx context.Context, u string, _ http.Header) error {
			if u == "ws://fast/" {
				fastCalls.Add(1)
				return nil
			}
			slowCalls.Add(1)
			n := slowInFlight.Add(1)
			if n > slowMax.Load() {
				slowMax.Store(n)
			}
			<-ctx.Done()
			slowInFlight.Add(-1)
			slowReturned.Store(true)
			return ctx.Err()
		},
	}, func() []*Upstream { return []*Upstream{fast, slow} }, nil)
	h.Start()
	h.Start() // no second loop

	deadline := time.Now().Add(5 * time.Second)
	for fastCalls.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d fast probes in 5s with a 2ms interval", fastCalls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	h.CheckNow(context.Background()) // skips slow, whose probe is still running
	if n := slowCalls.Load(); n != 1 {
		t.Errorf("slow upstream probed %d times while its probe ran, want 1", n)
	}
	h.Stop()
	if !slowReturned.Load() {
		t.Fatalf("Stop returned before the slow probe ended")
	}
	if slowMax.Load() != 1 {
		t.Errorf("up to %d concurrent probes of one upstream, want 1", slowMax.Load())
	}
	if !activeUp(slow) || slow.lastProbeErr != nil {
		t.Errorf("a probe aborted by Stop was recorded: healthy = %v, error = %v", activeUp(slow), slow.lastProbeErr)
	}
	h.Stop() // idempotent
	h.Start()
	h.CheckNow(context.Background())
	if n := fastCalls.Load(); n < 5 {
		t.Fatalf("fast calls went backwards: %d", n)
	}
	before := fastCalls.Load()
	time.Sleep(10 * time.Millisecond)
	if after := fastCalls.Load(); after != before {
		t.Errorf("probes ran after Stop: %d -> %d", before, after)
	}
}

func TestHealthCheckerCheckNowCancelledRecordsNothing(t *testing.T) {
	u := mustUpstream(t, "ws://backend/")
	h := NewHealthChecker(ActiveHealth{Dial: func(ctx context.Context, _ string, _ http.Header) error {
		<-ctx.Done()
		return ctx.Err()
	}}, func() []*Upstream { return []*Upstream{u} }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	h.CheckNow(ctx)
	if !activeUp(u) || u.lastProbeErr != nil {
		t.Fatalf("cancelled probe was recorded: healthy = %v, error = %v", activeUp(u), u.lastProbeErr)
	}
}

func TestHealthCheckerLogsTransitionsOnly(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	u := mustUpstream(t, "ws://user:secret@backend:8080/")
	bad := errors.New("connection refused")
	h := NewHealthChecker(ActiveHealth{Dial: scriptedDial(nil, bad, bad, nil, nil)},
		func() []*Upstream { return []*Upstream{u} }, zap.New(core))
	for range 5 {
		h.CheckNow(context.Background())
	}
	entries := logs.AllUntimed()
	if len(entries) != 2 {
		t.Fatalf("got %d log entries, want 2 (down, up): %v", len(entries), entries)
	}
	for i, want := range []string{"upstream unhealthy", "upstream healthy"} {
		e := entries[i]
		if e.Message != want || e.Level != zapcore.InfoLevel {
			t.Errorf("entry %d = %s %q, want info %q", i, e.Level, e.Message, want)
		}
		fields := e.ContextMap()
		if got := fields["upstream"]; got != "ws://user:xxxxx@backend:8080/" {
			t.Errorf("entry %d upstream = %v, want the redacted address", i, got)
		}
		if _, ok := fields["error"]; ok != (i == 0) {
			t.Errorf("entry %d error field present = %v, want %v", i, ok, i == 0)
		}
	}
}

func TestPassiveHealthMarksDownAfterMaxFailsUntilExpiry(t *testing.T) {
	const maxFails, window = 2, 100 * time.Millisecond
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		failures []time.Duration // offsets from t0
		at       time.Duration
		want     bool
	}{
		{"no failure", nil, 0, true},
		{"one failure is below max_fails", []time.Duration{0}, time.Millisecond, true},
		{"two failures within the window", []time.Duration{0, 10 * time.Millisecond}, 20 * time.Millisecond, false},
		{"still down just before the first expires", []time.Duration{0, 10 * time.Millisecond}, 99 * time.Millisecond, false},
		{"healthy once the first expires", []time.Duration{0, 10 * time.Millisecond}, 100 * time.Millisecond, true},
		{"healthy once both expire", []time.Duration{0, 10 * time.Millisecond}, time.Second, true},
		{"failures spread wider than the window", []time.Duration{0, 150 * time.Millisecond}, 160 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := mustUpstream(t, "ws://backend/")
			for _, off := range tt.failures {
				u.recordFailure(t0.Add(off), maxFails, window)
			}
			if got := u.Healthy(t0.Add(tt.at), maxFails, window); got != tt.want {
				t.Errorf("Healthy at +%v = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestPassiveHealthDisabledWithoutLimits(t *testing.T) {
	u := mustUpstream(t, "ws://backend/")
	now := time.Now()
	for range 10 {
		u.recordFailure(now, 0, time.Second)
		u.recordFailure(now, 2, 0)
	}
	if !u.Healthy(now, 2, time.Second) {
		t.Fatalf("failures recorded with passive health disabled count later")
	}
}

func TestPassiveHealthRealTimeRecovery(t *testing.T) {
	u := mustUpstream(t, "ws://backend/")
	u.recordFailure(time.Now(), 2, 100*time.Millisecond)
	u.recordFailure(time.Now(), 2, 100*time.Millisecond)
	if u.Healthy(time.Now(), 2, 100*time.Millisecond) {
		t.Fatalf("healthy right after 2 failures with max_fails 2")
	}
	time.Sleep(110 * time.Millisecond)
	if !u.Healthy(time.Now(), 2, 100*time.Millisecond) {
		t.Fatalf("still unhealthy after the 100ms fail duration")
	}
}
