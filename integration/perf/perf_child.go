package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/proxy"
)

// childEnv marks a process started as a proxy child (used by the test binary,
// whose own flags are not the harness's).
const childEnv = "WSGATE_PERF_CHILD"

// childStats is the child's answer to "stats" and "memstats".
type childStats struct {
	Mallocs    uint64 `json:"mallocs"`
	TotalAlloc uint64 `json:"total_alloc"`
	Active     int64  `json:"active"`
	Goroutines int    `json:"goroutines"`
	// memstats only (after two GCs):
	HeapAlloc  uint64 `json:"heap_alloc,omitempty"`
	StackInuse uint64 `json:"stack_inuse,omitempty"`
	RSS        uint64 `json:"rss,omitempty"`
	Error      string `json:"error,omitempty"`
}

// serveProxyChild runs one proxy of kind in front of upstream, prints
// "LISTEN host:port" on out, then answers commands read line by line on in:
//
//	stats               mallocs, bytes allocated, active sessions (JSON line)
//	memstats            the same after two GCs, plus live heap, stack and RSS
//	profile-start PATH  start a CPU profile into PATH
//	profile-stop        stop it
//	heap-profile PATH   write a heap profile (after a GC) into PATH
//
// It exits when in reaches EOF (the harness ended).
func serveProxyChild(kind, upstream string, copyBuffer int, in io.Reader, out io.Writer) error {
	if upstream == "" {
		return errors.New("-serve-proxy needs -upstream")
	}
	raiseNofile()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var active func() int64
	switch kind {
	case "tcp":
		tp := &tcpProxy{upstream: upstream}
		go tp.serve(ln)
		active = tp.active.Load
	case "copy":
		tp := &tcpProxy{upstream: upstream, buffer: copyBuffer}
		go tp.serve(ln)
		active = tp.active.Load
	case "wsgate":
		p, err := proxy.New(proxy.Config{Upstreams: []string{"ws://" + upstream}})
		if err != nil {
			return err
		}
		go (&http.Server{Handler: p}).Serve(ln)
		active = func() int64 { return int64(p.ActiveSessions()) }
	case "gorilla":
		gp := &gorillaProxy{upstream: upstream}
		gp.upgrader.CheckOrigin = func(*http.Request) bool { return true }
		go (&http.Server{Handler: gp}).Serve(ln)
		active = gp.active.Load
	default:
		return fmt.Errorf("-serve-proxy: unknown kind %q (tcp, copy, wsgate, gorilla)", kind)
	}
	fmt.Fprintf(out, "LISTEN %s\n", ln.Addr())

	var prof *os.File
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		var st childStats
		switch cmd {
		case "stats", "memstats":
			var ms runtime.MemStats
			if cmd == "memstats" {
				runtime.GC()
				runtime.GC()
				debug.FreeOSMemory()
			}
			runtime.ReadMemStats(&ms)
			st.Mallocs, st.TotalAlloc = ms.Mallocs, ms.TotalAlloc
			st.Active, st.Goroutines = active(), runtime.NumGoroutine()
			if cmd == "memstats" {
				st.HeapAlloc, st.StackInuse = ms.HeapAlloc, ms.StackInuse
				st.RSS = selfRSS()
			}
		case "profile-start":
			f, err := os.Create(arg)
			if err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
				} else {
					prof = f
				}
			}
			if err != nil {
				st.Error = err.Error()
			}
		case "heap-profile":
			runtime.GC()
			f, err := os.Create(arg)
			if err == nil {
				err = pprof.Lookup("heap").WriteTo(f, 0)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				st.Error = err.Error()
			}
		case "profile-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				if err := prof.Close(); err != nil {
					st.Error = err.Error()
				}
				prof = nil
			}
		default:
			st.Error = "unknown command " + cmd
		}
		if err := enc.Encode(&st); err != nil {
			return err
		}
	}
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	return nil
}

// selfRSS reads VmRSS from /proc/self/status, in bytes (0 where unavailable).
func selfRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

// tcpProxy is the baseline: accept, dial the upstream, copy both ways with
// io.Copy (which splices between TCP sockets on Linux). With buffer set, it
// copies through a buffer of that size in user space instead (no splice).
type tcpProxy struct {
	upstream string
	buffer   int
	active   atomic.Int64
}

// copyStream copies src to dst: by splice, or through a buffer if t.buffer is set.
func (t *tcpProxy) copyStream(dst, src *net.TCPConn) error {
	if t.buffer == 0 {
		_, err := io.Copy(dst, src)
		return err
	}
	// The wrappers hide ReadFrom and WriteTo, so io.CopyBuffer uses buf.
	_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, t.buffer))
	return err
}

func (t *tcpProxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like
			continue
		}
		go t.handle(c.(*net.TCPConn))
	}
}

func (t *tcpProxy) handle(c *net.TCPConn) {
	defer c.Close()
	nc, err := net.Dial("tcp", t.upstream)
	if err != nil {
		return
	}
	u := nc.(*net.TCPConn)
	defer u.Close()
	t.active.Add(1)
	defer t.active.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := t.copyStream(u, c); err != nil {
			u.Close()
			c.Close()
			return
		}
		u.CloseWrite()
	}()
	if err := t.copyStream(c, u); err != nil {
		u.Close()
		c.Close()
	} else {
		c.CloseWrite()
	}
	<-done
}

// gorillaProxy is a message-level proxy on gorilla/websocket with default
// settings: Upgrade the client, Dial the upstream, then ReadMessage→WriteMessage
// in one goroutine per direction.
type gorillaProxy struct {
	upstream string
	upgrader websocket.Upgrader
	dialer   websocket.Dialer
	active   atomic.Int64
}

func (g *gorillaProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := url.URL{Scheme: "ws", Host: g.upstream, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	uc, resp, err := g.dialer.Dial(target.String(), nil)
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			status = resp.StatusCode
		}
		http.Error(w, "upstream: "+err.Error(), status)
		return
	}
	cc, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		uc.Close()
		return
	}
	g.active.Add(1)
	defer g.active.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gorillaPump(cc, uc)
		uc.SetReadDeadline(time.Now().Add(5 * time.Second)) // the other pump ends soon
	}()
	gorillaPump(uc, cc)
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-done
	cc.Close()
	uc.Close()
}

// gorillaPump forwards messages from src to dst; at the end it forwards src's
// close code (1001 if src vanished).
func gorillaPump(src, dst *websocket.Conn) {
	for {
		mt, p, err := src.ReadMessage()
		if err != nil {
			code, text := websocket.CloseGoingAway, ""
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseNoStatusReceived {
				code, text = ce.Code, ce.Text
			}
			dst.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
			return
		}
		if err := dst.WriteMessage(mt, p); err != nil {
			return
		}
	}
}
