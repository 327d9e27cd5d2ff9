package proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testPool returns n upstreams ws://10.0.0.i:8080/ with the given active session counts.
func testPool(n int, loads ...int64) []*Upstream {
	pool := make([]*Upstream, n)
	for i := range pool {
		pool[i] = &Upstream{URL: &url.URL{Scheme: "ws", Host: fmt.Sprintf("10.0.0.%d:8080", i+1), Path: "/"}}
		if i < len(loads) {
			pool[i].active.Add(loads[i])
		}
	}
	return pool
}

// indexOf returns the position of u in pool, or -1 (nil or foreign).
func indexOf(pool []*Upstream, u *Upstream) int {
	for i, p := range pool {
		if p == u {
			return i
		}
	}
	return -1
}

// countPicks selects n times with b and counts the picks per pool index.
func countPicks(t *testing.T, b Balancer, pool []*Upstream, n int, req func(i int) *http.Request) []int {
	t.Helper()
	counts := make([]int, len(pool))
	for i := range n {
		idx := indexOf(pool, b.Select(pool, req(i), nil))
		if idx < 0 {
			t.Fatalf("selection %d: got an upstream outside the pool (or nil)", i)
		}
		counts[idx]++
	}
	return counts
}

// plainRequest returns a GET request from 192.0.2.1:1234.
func plainRequest(int) *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) }

func TestRoundRobinCyclesEvenlyInOrder(t *testing.T) {
	pool := testPool(3)
	b := RoundRobin()
	for i := range 300 {
		if got := indexOf(pool, b.Select(pool, nil, nil)); got != i%3 {
			t.Fatalf("selection %d: got upstream %d, want %d", i, got, i%3)
		}
	}
}

func TestRoundRobinConcurrentSelectStaysEven(t *testing.T) {
	pool := testPool(3)
	b := RoundRobin()
	const workers, each = 8, 300
	var mu sync.Mutex
	counts := make([]int, 3)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			local := make([]int, 3)
			for range each {
				local[indexOf(pool, b.Select(pool, nil, nil))]++
			}
			mu.Lock()
			for i, c := range local {
				counts[i] += c
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for i, c := range counts {
		if c != workers*each/3 {
			t.Errorf("upstream %d chosen %d times, want exactly %d (counts %v)", i, c, workers*each/3, counts)
		}
	}
}

func TestLeastConnPicksLeastLoaded(t *testing.T) {
	tests := []struct {
		name  string
		loads []int64
		want  []int // acceptable indexes
	}{
		{"middle is least", []int64{3, 1, 2}, []int{1}},
		{"last is idle", []int64{5, 5, 0}, []int{2}},
		{"first is least", []int64{0, 7, 9}, []int{0}},
		{"tie among two least", []int64{2, 9, 2}, []int{0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool(len(tt.loads), tt.loads...)
			for range 100 {
				got := indexOf(pool, LeastConn().Select(pool, nil, nil))
				if !slices.Contains(tt.want, got) {
					t.Fatalf("loads %v: picked %d, want one of %v", tt.loads, got, tt.want)
				}
			}
		})
	}
}

func TestLeastConnSpreadsTiesRandomly(t *testing.T) {
	pool := testPool(3, 4, 4, 4)
	counts := countPicks(t, LeastConn(), pool, 1000, plainRequest)
	for i, c := range counts {
		if c <= 200 {
			t.Errorf("upstream %d chosen %d/1000 times among equal loads, want > 200 (counts %v)", i, c, counts)
		}
	}
}

func TestRandomChooseNeverPicksTheMostLoaded(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		loads []int64
		want  []int
	}{
		// Power of two choices over loads (0, 5, 10): the pair {1, 2} gives 1, any pair with 0 gives 0.
		{"two of three", 2, []int64{0, 5, 10}, []int{0, 1}},
		// n distinct samples out of n+1 always include index 0 or 1 (distinct: Floyd's algorithm).
		{"five of six on the stack", 5, []int64{0, 1, 2, 3, 4, 5}, []int{0, 1}},
		{"eleven of twelve allocated", 11, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, []int{0, 1}},
		{"n covers the pool", 3, []int64{4, 1, 9}, []int{1}},
		{"n beyond the pool", 10, []int64{4, 9, 1}, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool(len(tt.loads), tt.loads...)
			counts := countPicks(t, RandomChoose(tt.n), pool, 1000, plainRequest)
			for i, c := range counts {
				if c > 0 && !slices.Contains(tt.want, i) {
					t.Fatalf("loads %v: upstream %d chosen %d times, want only %v (counts %v)", tt.loads, i, c, tt.want, counts)
				}
			}
			for _, i := range tt.want {
				if counts[i] == 0 {
					t.Errorf("loads %v: upstream %d never chosen (counts %v)", tt.loads, i, counts)
				}
			}
		})
	}
}

func TestRandomChooseSpreadsTiesEvenly(t *testing.T) {
	// Equal loads: every upstream must be as likely, which also needs distinct samples.
	pool := testPool(3, 2, 2, 2)
	counts := countPicks(t, RandomChoose(2), pool, 3000, plainRequest)
	for i, c := range counts {
		if c < 800 {
			t.Errorf("upstream %d chosen %d/3000 times among equal loads, want about 1000 (counts %v)", i, c, counts)
		}
	}
}

func TestRandomChooseBelowTwoMeansTwo(t *testing.T) {
	for _, n := range []int{-1, 0, 1} {
		if got := RandomChoose(n); got != randomChoose(2) {
			t.Errorf("RandomChoose(%d) = %v, want randomChoose(2)", n, got)
		}
	}
}

func TestRandomChoosesEveryUpstream(t *testing.T) {
	pool := testPool(3)
	counts := countPicks(t, Random(), pool, 3000, plainRequest)
	for i, c := range counts {
		if c < 800 {
			t.Errorf("upstream %d chosen %d/3000 times, want about 1000 (counts %v)", i, c, counts)
		}
	}
}

func TestFirstReturnsFirstInConfiguredOrder(t *testing.T) {
	pool := testPool(3, 9, 0, 0)
	for range 10 {
		if got := First().Select(pool, nil, nil); got != pool[0] {
			t.Fatalf("First picked %d, want 0", indexOf(pool, got))
		}
	}
	if got := First().Select(pool[1:], nil, nil); got != pool[1] {
		t.Fatalf("First over pool[1:] picked %d, want 1", indexOf(pool, got))
	}
}

// allBalancers is one instance of every policy, for rules all of them obey.
func allBalancers() map[string]Balancer {
	return map[string]Balancer{
		"round_robin":     RoundRobin(),
		"least_conn":      LeastConn(),
		"random":          Random(),
		"random_choose_2": RandomChoose(2),
		"random_choose_9": RandomChoose(9),
		"first":           First(),
		"ip_hash":         IPHash(),
		"uri_hash":        URIHash(),
		"query":           QueryHash("user"),
		"header":          HeaderHash("X-User"),
		"cookie":          &StickyCookie{Name: "session"},
	}
}

func TestBalancersReturnNilOnEmptyPool(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-User", "alice")
	r.AddCookie(&http.Cookie{Name: "session", Value: "s1"})
	for name, b := range allBalancers() {
		for _, pool := range [][]*Upstream{nil, {}} {
			if got := b.Select(pool, r, nil); got != nil {
				t.Errorf("%s: Select(%#v) = %v, want nil", name, pool, got)
			}
		}
	}
}

func TestBalancersPickTheOnlyUpstream(t *testing.T) {
	pool := testPool(1, 3)
	for name, b := range allBalancers() {
		if got := b.Select(pool, plainRequest(0), nil); got != pool[0] {
			t.Errorf("%s: Select over one upstream = %v, want it", name, got)
		}
	}
}

func TestBalancersDoNotAllocatePerSelect(t *testing.T) {
	pool := testPool(5, 3, 1, 4, 1, 5)
	r := plainRequest(0)
	for name, b := range map[string]Balancer{
		"round_robin": RoundRobin(), "least_conn": LeastConn(), "random": Random(),
		"random_choose_2": RandomChoose(2), "random_choose_4": RandomChoose(4), "first": First(),
	} {
		if n := testing.AllocsPerRun(100, func() { b.Select(pool, r, nil) }); n != 0 {
			t.Errorf("%s: %v allocations per Select, want 0", name, n)
		}
	}
}

// requestFrom returns a GET request whose RemoteAddr is addr.
func requestFrom(addr string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = addr
	return r
}

func TestIPHashIsStablePerClient(t *testing.T) {
	pool := testPool(5)
	b := IPHash()
	want := b.Select(pool, requestFrom("198.51.100.7:40000"), nil)
	for i := range 100 {
		if got := b.Select(pool, requestFrom(fmt.Sprintf("198.51.100.7:%d", 40000+i)), nil); got != want {
			t.Fatalf("request %d from the same IP went to %d, first went to %d", i, indexOf(pool, got), indexOf(pool, want))
		}
	}
	// A fresh balancer (another proxy instance) agrees: the hash has no per-process seed.
	if got := IPHash().Select(testPool(5), requestFrom("198.51.100.7"), nil); got.Address() != want.Address() {
		t.Fatalf("another instance picked %s, want %s", got.Address(), want.Address())
	}
}

func TestIPHashIgnoresThePort(t *testing.T) {
	pool := testPool(7)
	for i := range 50 {
		for _, ip := range []string{fmt.Sprintf("203.0.113.%d", i), fmt.Sprintf("2001:db8::%x", i)} {
			withPort := requestFrom(net.JoinHostPort(ip, "5555"))
			if a, b := IPHash().Select(pool, withPort, nil), IPHash().Select(pool, requestFrom(ip), nil); a != b {
				t.Fatalf("%s with and without port map to %d and %d", ip, indexOf(pool, a), indexOf(pool, b))
			}
		}
	}
}

func TestIPHashRemovingAnUpstreamOnlyRemapsItsClients(t *testing.T) {
	pool := testPool(4)
	rng := rand.New(rand.NewPCG(1, 2))
	b := IPHash()
	removed := pool[1]
	smaller := []*Upstream{pool[0], pool[2], pool[3]}
	counts := make([]int, len(pool))
	moved := 0
	for range 1000 {
		ip := fmt.Sprintf("%d.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(65536))
		before := b.Select(pool, requestFrom(ip), nil)
		after := b.Select(smaller, requestFrom(ip), nil)
		counts[indexOf(pool, before)]++
		if before != removed && after != before {
			t.Fatalf("%s moved from %d to %d though its upstream stayed", ip, indexOf(pool, before), indexOf(pool, after))
		}
		if before == removed {
			moved++
		}
	}
	for i, c := range counts {
		if c < 150 {
			t.Errorf("upstream %d got %d/1000 clients, want about 250: hash spreads badly (counts %v)", i, c, counts)
		}
	}
	if moved != counts[1] {
		t.Errorf("moved %d clients, want the %d of the removed upstream", moved, counts[1])
	}
}

func TestKeyHashIsStablePerValueAndFallsBackToRandom(t *testing.T) {
	tests := []struct {
		name      string
		b         Balancer
		set       func(r *http.Request, v string)
		fallsBack bool // without the value, the choice is random (a request always has a URI)
	}{
		{"header", HeaderHash("x-user"), func(r *http.Request, v string) { r.Header.Set("X-User", v) }, true},
		{"query", QueryHash("user"), func(r *http.Request, v string) { r.URL.RawQuery = "user=" + v }, true},
		{"uri", URIHash(), func(r *http.Request, v string) { r.RequestURI = "/" + v }, false},
		{"host header", HeaderHash("Host"), func(r *http.Request, v string) { r.Host = v }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool(2)
			with := func(v string) func(int) *http.Request {
				return func(int) *http.Request {
					r := httptest.NewRequest(http.MethodGet, "/", nil)
					r.Host = ""
					if v != "" {
						tt.set(r, v)
					}
					return r
				}
			}
			// Stable: each value always maps to one upstream, and values spread.
			var seen [2]bool
			for i := range 20 {
				v := fmt.Sprintf("user-%d", i)
				counts := countPicks(t, tt.b, pool, 20, with(v))
				if counts[0] != 0 && counts[1] != 0 {
					t.Fatalf("value %q went to both upstreams: %v", v, counts)
				}
				seen[0] = seen[0] || counts[0] > 0
				seen[1] = seen[1] || counts[1] > 0
			}
			if !seen[0] || !seen[1] {
				t.Errorf("20 values all mapped to one upstream: %v", seen)
			}
			if !tt.fallsBack {
				return
			}
			// Absent: random, so both upstreams are chosen.
			counts := countPicks(t, tt.b, pool, 200, with(""))
			if counts[0] == 0 || counts[1] == 0 {
				t.Errorf("without the value, picks were %v, want both upstreams (random fallback)", counts)
			}
		})
	}
}

func TestParseBalancerMapsCaddyPolicyNames(t *testing.T) {
	tests := []struct {
		policy string
		args   []string
		want   Balancer
	}{
		{"", nil, Random()},
		{"random", nil, Random()},
		{"random_choose", nil, RandomChoose(2)},
		{"random_choose", []string{"3"}, RandomChoose(3)},
		{"round_robin", nil, RoundRobin()},
		{"least_conn", nil, LeastConn()},
		{"first", nil, First()},
		{"ip_hash", nil, IPHash()},
		{"client_ip_hash", nil, IPHash()},
		{"header", []string{"X-User"}, HeaderHash("X-User")},
		{"header", []string{"x-user"}, HeaderHash("X-User")},
		{"uri_hash", nil, URIHash()},
		{"query", []string{"user"}, QueryHash("user")},
		{"cookie", nil, &StickyCookie{}},
		{"cookie", []string{"session"}, &StickyCookie{Name: "session"}},
		{"cookie", []string{"session", "s3cret"}, &StickyCookie{Name: "session", Secret: "s3cret"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{tt.policy}, tt.args...), " "), func(t *testing.T) {
			got, err := ParseBalancer(tt.policy, tt.args...)
			if err != nil {
				t.Fatalf("ParseBalancer(%q, %q): %v", tt.policy, tt.args, err)
			}
			if !sameBalancer(got, tt.want) {
				t.Errorf("ParseBalancer(%q, %q) = %#v, want %#v", tt.policy, tt.args, got, tt.want)
			}
		})
	}
}

func TestParseBalancerRejectsBadPoliciesAndArgs(t *testing.T) {
	tests := []struct {
		policy  string
		args    []string
		wantErr string
	}{
		{"weighted_round_robin", nil, "unknown lb policy"},
		{"Random", nil, "valid: client_ip_hash, cookie, first, header, ip_hash, least_conn, query, random, random_choose, round_robin, uri_hash"},
		{"round_robin", []string{"1"}, "takes 0 to 0 arguments, got 1"},
		{"first", []string{"x"}, "takes 0 to 0 arguments"},
		{"", []string{"x"}, "takes 0 to 0 arguments"},
		{"random_choose", []string{"1"}, "choose must be an integer >= 2"},
		{"random_choose", []string{"two"}, "choose must be an integer >= 2"},
		{"random_choose", []string{"2", "3"}, "takes 0 to 1 arguments, got 2"},
		{"header", nil, "takes 1 to 1 arguments, got 0"},
		{"header", []string{""}, "empty argument"},
		{"query", nil, "takes 1 to 1 arguments, got 0"},
		{"cookie", []string{"a", "b", "c"}, "takes 0 to 2 arguments, got 3"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{tt.policy}, tt.args...), " "), func(t *testing.T) {
			b, err := ParseBalancer(tt.policy, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseBalancer(%q, %q) = %v, %v; want error containing %q", tt.policy, tt.args, b, err, tt.wantErr)
			}
			if b != nil {
				t.Errorf("ParseBalancer returned a Balancer with its error")
			}
		})
	}
}

// sameBalancer reports whether a and b are the same policy with the same parameters.
func sameBalancer(a, b Balancer) bool {
	fa, okA := a.(BalancerFunc)
	fb, okB := b.(BalancerFunc)
	if okA || okB {
		return okA && okB && reflect.ValueOf(fa).Pointer() == reflect.ValueOf(fb).Pointer()
	}
	return reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.DeepEqual(a, b)
}
