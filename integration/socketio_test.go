package integration

// Socket.IO v4 behind wsgate with sticky sessions. Socket.IO's first requests
// are plain HTTP (long-polling), the next one is the WebSocket upgrade of the
// same session: the HTTP requests and the upgrade must reach the same node, or
// the upgrade lands on a node that has never heard of the session. Here the
// HTTP requests go through Caddy's reverse_proxy (or examples/chi's plain-HTTP
// forwarding) and the upgrade through wsgate, both with a sticky "lb" cookie;
// fresh headless-Chromium profiles (new cookie jars) connect with the
// Socket.IO browser client, wait for the upgrade and send acked messages.
// Every client must end up on WebSocket, get every ack, and be served by one
// node from the handshake to the last message; and the clients must spread
// over more than one node.
//
// The nodes are node/socketio_server.js (npm socket.io), the page is
// node/socketio_page.html with socket.io-client's dist/socket.io.min.js.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
)

const (
	// socketIOAcks is how many acked messages each page sends after the upgrade.
	socketIOAcks = 20
	// socketIOClients is how many fresh browser profiles connect at once; more
	// batches follow (up to socketIOBatches) only while all clients so far
	// landed on one node, which the random first choice does with probability
	// k^-(clients-1): the spread check then fails only for a setup that really
	// sends everyone to one node.
	socketIOClients = 6
	socketIOBatches = 3
)

// ioNodeEvent is one JSON line of node/socketio_server.js.
type ioNodeEvent struct {
	Ev        string `json:"ev"`
	Node      string `json:"node"`
	Port      int    `json:"port"`
	Method    string `json:"method"`
	SID       string `json:"sid"`
	Transport string `json:"transport"`
	Status    int    `json:"status"`
	LB        bool   `json:"lb"`
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Reason    string `json:"reason"`
	Ext       string `json:"ext"`
	I         int    `json:"i"`
	N         int    `json:"n"`
}

// socketIONode is one running node/socketio_server.js.
type socketIONode struct {
	ID   string // n1, n2, ...
	Addr string // 127.0.0.1:port

	mu     sync.Mutex
	events []ioNodeEvent
	stderr *testkit.SyncBuffer
}

func (n *socketIONode) log() []ioNodeEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

// requireSocketIO skips (or, in CI, fails) unless node, the socket.io packages
// and Chromium are installed.
func requireSocketIO(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("node")
	testkit.RequirePeer(t, err == nil, "node not installed: run integration/setup.sh")
	for _, f := range []string{"socket.io/package.json", "socket.io-client/dist/socket.io.min.js"} {
		_, err := os.Stat(filepath.Join("node_modules", f))
		testkit.RequirePeer(t, err == nil, "npm package %s not installed in integration/node_modules: run integration/setup.sh", strings.Split(f, "/")[0])
	}
	_, err = os.Stat(chromiumPath)
	testkit.RequirePeer(t, err == nil, "chromium not installed at %s: run integration/setup.sh", chromiumPath)
}

// startSocketIONodes starts k Socket.IO nodes, n1..nk; corsOrigin, if set, is
// the page origin they accept cross-origin requests (with cookies) from.
func startSocketIONodes(t *testing.T, k int, corsOrigin string) []*socketIONode {
	t.Helper()
	nodes := make([]*socketIONode, k)
	ready := make(chan error, k)
	for i := range nodes {
		n := &socketIONode{ID: fmt.Sprintf("n%d", i+1), stderr: &testkit.SyncBuffer{}}
		nodes[i] = n
		cmd := exec.Command("node", filepath.Join("node", "socketio_server.js"), n.ID, corsOrigin)
		cmd.Stderr = n.stderr
		cmd.WaitDelay = 2 * time.Second
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting node %s: %v", n.ID, err)
		}
		read, exited := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(read)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			listening := false
			for sc.Scan() {
				var ev ioNodeEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					ev = ioNodeEvent{Ev: "error", Node: n.ID, Message: "unparsable line: " + sc.Text()}
				}
				n.mu.Lock()
				n.events = append(n.events, ev)
				n.mu.Unlock()
				if ev.Ev == "listening" && !listening {
					listening = true
					n.Addr = fmt.Sprintf("127.0.0.1:%d", ev.Port)
					ready <- nil
				}
			}
			if !listening {
				ready <- fmt.Errorf("node %s exited before listening: %s", n.ID, n.stderr.String())
			}
		}()
		go func() {
			<-read // Wait closes the pipe: read it to the end first
			cmd.Wait()
			close(exited)
		}()
		t.Cleanup(func() {
			stdin.Close() // the server exits when its stdin closes
			select {
			case <-exited:
			case <-time.After(3 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				if s := n.stderr.String(); s != "" {
					t.Logf("node %s stderr:\n%s", n.ID, s)
				}
			}
		})
	}
	for range nodes {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("the Socket.IO nodes did not report listening within %v", waitTimeout)
		}
	}
	return nodes
}

// socketIOPageDir returns a directory with the test page as index.html and
// the Socket.IO browser client as socket.io.min.js.
func socketIOPageDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{
		filepath.Join("node", "socketio_page.html"):                                   "index.html",
		filepath.Join("node_modules", "socket.io-client", "dist", "socket.io.min.js"): "socket.io.min.js",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ioAck is a "hello" or an ack reply as the page received it.
type ioAck struct {
	Node      string `json:"node"`
	SID       string `json:"sid"`
	Transport string `json:"transport"`
	I         int    `json:"i"`
	N         int    `json:"n"`
}

// pageOutcome is window.sio of node/socketio_page.html once done.
type pageOutcome struct {
	Done             bool     `json:"done"`
	Connected        bool     `json:"connected"`
	ConnectError     string   `json:"connectError"`
	SID              string   `json:"sid"`
	Hello            *ioAck   `json:"hello"`
	InitialTransport string   `json:"initialTransport"`
	Upgraded         bool     `json:"upgraded"`
	UpgradeError     string   `json:"upgradeError"`
	Transport        string   `json:"transport"`
	Acks             []ioAck  `json:"acks"`
	AckError         string   `json:"ackError"`
	Disconnect       string   `json:"disconnect"`
	FinalTransport   string   `json:"finalTransport"`
	Log              []string `json:"log"`

	err error // the browser could not be driven
}

// runPage loads pageURL in a fresh headless Chromium profile and returns the
// page's outcome.
func runPage(pageURL, profile string) pageOutcome {
	bctx, closeBrowser := startChromium(profile, chromedp.WindowSize(800, 600))
	defer closeBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(pageURL)); err != nil {
		return pageOutcome{err: fmt.Errorf("loading %s: %w", pageURL, err)}
	}
	// connect ≤ 10 s, upgrade ≤ 8 s, acks ≤ 5 s: the page is done well within 30 s.
	out, err := chromedp.Run(bctx, chromedp.Poll[pageOutcome](`window.sio && window.sio.done && window.sio`,
		chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		log, _ := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.sio ? window.sio.log : ["no window.sio"]`))
		return pageOutcome{err: fmt.Errorf("waiting for the page to finish: %w; page log: %q", err, log), Log: log}
	}
	return out
}

// runPages runs count fresh profiles on pageURL at once.
func runPages(t *testing.T, pageURL string, count int) []pageOutcome {
	t.Helper()
	out := make([]pageOutcome, count)
	var wg sync.WaitGroup
	for i := range out {
		profile := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = runPage(pageURL, profile)
		}()
	}
	wg.Wait()
	return out
}

// sessionTrace is what the nodes recorded of one engine.io session.
type sessionTrace struct {
	handshake []string            // nodes that created the session
	startedOn string              // the transport it was created on
	touched   map[string][]string // node -> what it saw of the session (requests, upgrades, errors, acks)
	acks      map[string]int      // node -> acks it answered
	upgraded  []string            // nodes that moved the session to WebSocket
	offers    []string            // Sec-WebSocket-Extensions of its upgrade requests
	noCookie  int                 // its requests without the lb cookie
	closed    bool                // some node saw its disconnect
}

func (s sessionTrace) nodes() []string {
	var ns []string
	for n := range s.touched {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (s sessionTrace) String() string {
	var parts []string
	for _, n := range s.nodes() {
		parts = append(parts, fmt.Sprintf("%s: %s", n, strings.Join(s.touched[n], ", ")))
	}
	if len(parts) == 0 {
		return "no node saw it"
	}
	return strings.Join(parts, "; ")
}

func noCookie(e ioNodeEvent) string {
	if e.LB {
		return ""
	}
	return " without lb cookie"
}

// traceSession collects the nodes' records of session sid.
func traceSession(nodes []*socketIONode, sid string) sessionTrace {
	tr := sessionTrace{touched: map[string][]string{}, acks: map[string]int{}}
	for _, n := range nodes {
		var seen []string
		counts := map[string]int{}
		var order []string
		add := func(what string) {
			if counts[what] == 0 {
				order = append(order, what)
			}
			counts[what]++
		}
		for _, e := range n.log() {
			if e.SID != sid {
				continue
			}
			switch e.Ev {
			case "handshake":
				tr.handshake = append(tr.handshake, n.ID)
				tr.startedOn = e.Transport
				add("handshake (" + e.Transport + ")")
			case "request":
				add(fmt.Sprintf("%s %s %d%s", e.Method, e.Transport, e.Status, noCookie(e)))
				if !e.LB {
					tr.noCookie++
				}
			case "upgrade_request":
				tr.offers = append(tr.offers, e.Ext)
				add("upgrade request (" + e.Transport + ")" + noCookie(e))
				if !e.LB {
					tr.noCookie++
				}
			case "connection_error":
				add(fmt.Sprintf("refused %s: %q", e.Transport, e.Message))
			case "upgraded":
				tr.upgraded = append(tr.upgraded, n.ID)
				add("upgraded to " + e.Transport)
			case "ack":
				tr.acks[n.ID]++
				add("ack over " + e.Transport)
			case "disconnect":
				tr.closed = true
				add("disconnect (" + e.Reason + ")")
			}
		}
		for _, w := range order {
			if counts[w] > 1 {
				w = fmt.Sprintf("%s ×%d", w, counts[w])
			}
			seen = append(seen, w)
		}
		if len(seen) > 0 {
			tr.touched[n.ID] = seen
		}
	}
	return tr
}

// checkStickySessions runs fresh browser profiles on pageURL (in batches of
// socketIOClients, more only while every client so far used the same node)
// and checks each client's session against what the nodes recorded. server is
// the origin the page's Socket.IO client talks to.
func checkStickySessions(t *testing.T, nodes []*socketIONode, pageURL, server string) {
	t.Helper()
	var outcomes []pageOutcome
	spread := map[string]int{} // node -> clients it served
	for batch := 0; batch < socketIOBatches; batch++ {
		start := time.Now()
		got := runPages(t, pageURL, socketIOClients)
		t.Logf("batch %d: %d browsers in %v", batch+1, len(got), time.Since(start).Round(time.Millisecond))
		outcomes = append(outcomes, got...)
		for _, o := range got {
			if o.Hello != nil {
				spread[o.Hello.Node]++
			}
		}
		if len(spread) != 1 {
			break // spread over several nodes, or a failure that the checks below report
		}
	}

	// The nodes' stdout lags a little behind the pages: wait for the
	// disconnect of every connected client (each page disconnects when done).
	deadline := time.Now().Add(3 * time.Second)
	for _, o := range outcomes {
		for o.Connected && !traceSession(nodes, o.SID).closed && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}

	upgradedCount, probed := 0, false
	for i, o := range outcomes {
		name := fmt.Sprintf("client %d", i+1)
		if o.err != nil {
			t.Errorf("%s: %v", name, o.err)
			continue
		}
		if !o.Connected {
			t.Errorf("%s: did not connect: %q; page log:\n\t%s", name, o.ConnectError, strings.Join(o.Log, "\n\t"))
			if !probed {
				probed = true
				t.Errorf("a Socket.IO handshake from Go: %s", probeHandshake(server))
			}
			continue
		}
		name += " (sid " + o.SID + ")"
		tr := traceSession(nodes, o.SID)
		var problems []string
		if !o.Upgraded || o.Transport != "websocket" {
			p := fmt.Sprintf("not upgraded: engine transport %q after the wait", o.Transport)
			if o.UpgradeError != "" {
				p += fmt.Sprintf(", upgradeError %q", o.UpgradeError)
			}
			problems = append(problems, p)
		} else {
			upgradedCount++
		}
		if len(o.Acks) != socketIOAcks || o.AckError != "" {
			problems = append(problems, fmt.Sprintf("%d of %d acks came back (%s)", len(o.Acks), socketIOAcks, o.AckError))
		}
		// One node served the whole session: the one that created it, said
		// hello, answered every ack (with a counter of this connection) and
		// took the upgrade; no other node saw a request of this session.
		home := ""
		if o.Hello == nil {
			problems = append(problems, "no hello from the server")
		} else {
			home = o.Hello.Node
			if o.Hello.SID != o.SID {
				problems = append(problems, fmt.Sprintf("hello from %s is for sid %s", home, o.Hello.SID))
			}
		}
		var ackNodes []string
		for j, a := range o.Acks {
			if !slices.Contains(ackNodes, a.Node) {
				ackNodes = append(ackNodes, a.Node)
			}
			if a.Node != home || a.SID != o.SID || a.I != j || a.N != j+1 {
				problems = append(problems, fmt.Sprintf("ack %d is %+v, want node %s sid %s i %d n %d", j, a, home, o.SID, j, j+1))
				break
			}
		}
		if len(o.Acks) > 0 {
			if last := o.Acks[len(o.Acks)-1]; last.Transport != "websocket" {
				problems = append(problems, fmt.Sprintf("the last ack was served over %q, want websocket", last.Transport))
			}
		}
		if !slices.Equal(tr.handshake, []string{home}) {
			problems = append(problems, fmt.Sprintf("session created on %v, hello from %q", tr.handshake, home))
		}
		if tr.startedOn != "polling" {
			problems = append(problems, fmt.Sprintf("the session started on %q, want polling (then the upgrade)", tr.startedOn))
		}
		if ns := tr.nodes(); len(ns) != 1 || ns[0] != home {
			problems = append(problems, fmt.Sprintf("requests of the session reached nodes %v, want only %s", ns, home))
		}
		if o.Upgraded && !slices.Equal(tr.upgraded, []string{home}) {
			problems = append(problems, fmt.Sprintf("upgrade recorded by nodes %v, want %s", tr.upgraded, home))
		}
		// wsgate (compression off) strips Chromium's permessage-deflate offer;
		// an offer at the node means a byte-splicing proxy took the upgrade.
		for _, ext := range tr.offers {
			if ext != "" {
				problems = append(problems, fmt.Sprintf("an upgrade request reached the node with the browser's offer %q: it bypassed wsgate", ext))
				break
			}
		}
		if tr.noCookie > 0 {
			problems = append(problems, fmt.Sprintf("%d requests of the session came without the lb cookie", tr.noCookie))
		}
		if o.Upgraded && len(tr.offers) == 0 {
			problems = append(problems, "upgraded, but no node saw an upgrade request")
		}
		if len(problems) > 0 {
			t.Errorf("%s: %s\n\tacks from %v (last over %q); nodes saw: %s\n\tpage log:\n\t%s",
				name, strings.Join(problems, "; "), ackNodes, o.FinalTransport, tr, strings.Join(o.Log, "\n\t"))
			continue
		}
		t.Logf("%s: %s, polling then %s, %d acks; %s", name, home, o.Transport, len(o.Acks), tr)
	}
	t.Logf("%d of %d clients upgraded to websocket; clients per node: %v", upgradedCount, len(outcomes), spread)
	if len(spread) == 1 {
		t.Errorf("all %d clients were served by %v: the first choice (cookie absent) should spread them over the %d nodes", len(outcomes), spread, len(nodes))
	}
}

// probeHandshake tells what server answers to a Socket.IO long-polling handshake.
func probeHandshake(server string) string {
	u := server + "/socket.io/?EIO=4&transport=polling"
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return fmt.Sprintf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	return fmt.Sprintf("GET %s answered %s, Set-Cookie %q: %q", u, resp.Status, resp.Header.Values("Set-Cookie"), b)
}

// TestSocketIOCaddy: Caddy's reverse_proxy serves Socket.IO's long-polling,
// wsgate's ws directive the upgrade, both with lb_policy cookie lb, on two and
// three nodes; the page and client bundle come from the same Caddy. ws is
// ordered before reverse_proxy and passes non-upgrades on; that the upgrades
// went through ws and not reverse_proxy shows at the nodes: no
// permessage-deflate offer (ws with compression off strips it).
func TestSocketIOCaddy(t *testing.T) {
	checkLeaks(t)
	requireSocketIO(t)
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d nodes", k), func(t *testing.T) {
			nodes := startSocketIONodes(t, k, "")
			var addrs []string
			for _, n := range nodes {
				addrs = append(addrs, n.Addr)
			}
			dir := socketIOPageDir(t)
			port := testkit.FreePort(t)
			up := strings.Join(addrs, " ")
			caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	bind 127.0.0.1
	handle /socket.io/* {
		ws %[2]s {
			lb_policy cookie lb
			compression off
		}
		reverse_proxy %[2]s {
			lb_policy cookie lb
		}
	}
	handle {
		root * %[3]s
		file_server
	}
}
`, port, up, dir))
			server := fmt.Sprintf("http://127.0.0.1:%d", port)
			checkStickySessions(t, nodes, fmt.Sprintf("%s/?n=%d", server, socketIOAcks), server)
		})
	}
}

// TestSocketIOChi: examples/chi's /socket.io/ route (upgrades proxied frame by
// frame, long-polling forwarded as plain HTTP, -lb cookie:lb for both) on two
// and three nodes. The demo runs as a subprocess; the page comes from a file
// server of the test on another port of 127.0.0.1 and talks to the demo
// cross-origin: same site (cookies do not care about ports), so the SameSite=Lax
// lb cookie is stored and sent; the client sends credentials (withCredentials),
// the nodes allow the page's origin with credentials (CORS), and the demo
// allows it for the upgrade (-origin).
func TestSocketIOChi(t *testing.T) {
	checkLeaks(t)
	requireSocketIO(t)
	bin := buildChiDemo(t)
	page := httptest.NewServer(http.FileServer(http.Dir(socketIOPageDir(t))))
	t.Cleanup(page.Close)
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d nodes", k), func(t *testing.T) {
			nodes := startSocketIONodes(t, k, page.URL)
			args := []string{"-listen", "127.0.0.1:0", "-lb", "cookie:lb", "-origin", page.URL, "-compression", "off", "-drain-timeout", "2s"}
			for _, n := range nodes {
				args = append(args, "-upstream", "ws://"+n.Addr)
			}
			chi := startChiDemo(t, bin, args...)
			server := "http://" + chi
			checkStickySessions(t, nodes, fmt.Sprintf("%s/?n=%d&server=%s", page.URL, socketIOAcks, server), server)
		})
	}
}

// buildChiDemo builds examples/chi into a temporary directory.
func buildChiDemo(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "chi")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./examples/chi")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/chi: %v\n%s", err, out)
	}
	return bin
}

var chiListening = regexp.MustCompile(`listening.*"url": "http://([^/"]+)/"`)

// startChiDemo runs the demo binary with args and returns its address, from
// its "listening" log line; SIGTERM at cleanup.
func startChiDemo(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = 2 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the chi demo: %v", err)
	}
	logs := &testkit.SyncBuffer{}
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logs, sc.Text())
			if m := chiListening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan struct{})
	go func() {
		<-copied
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("chi demo log:\n%s", logs.String())
		}
	})
	select {
	case a := <-addr:
		if _, _, err := net.SplitHostPort(a); err != nil {
			t.Fatalf("the chi demo logged address %q: %v", a, err)
		}
		return a
	case <-exited:
		t.Fatalf("the chi demo exited: %s", logs.String())
	case <-time.After(waitTimeout):
		t.Fatalf("the chi demo logged no listening line within %v: %s", waitTimeout, logs.String())
	}
	return ""
}
