package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/wsgate/wsgate/proxy"
)

// childEnv marks a process started as a proxy child (used by the test binary,
// whose own flags are not the harness's).
const childEnv = "WSGATE_PERF_CHILD"

// childKinds are the proxies a child process can run (-serve-proxy).
var childKinds = []string{"tcp", "copy", "wsgate", "gorilla", "caddy", "wsgate-caddy"}

// childConfig is what a proxy child runs: the hidden -serve-proxy flags.
type childConfig struct {
	kind       string // one of childKinds
	upstream   string // the echo upstream's host:port
	copyBuffer int    // the copy kind's buffer
	certFile   string // with keyFile: the client leg is TLS with this certificate
	keyFile    string
	workDir    string // a directory the child may write (Caddy's storage)
}

// args are the command-line flags that start a child with c.
func (c childConfig) args() []string {
	a := []string{"-serve-proxy", c.kind, "-upstream", c.upstream, "-copy-buffer", strconv.Itoa(c.copyBuffer)}
	if c.certFile != "" {
		a = append(a, "-tls-cert", c.certFile, "-tls-key", c.keyFile)
	}
	if c.workDir != "" {
		a = append(a, "-work-dir", c.workDir)
	}
	return a
}

// childStats is the child's answer to "stats" and "memstats".
type childStats struct {
	Mallocs    uint64 `json:"mallocs"`
	TotalAlloc uint64 `json:"total_alloc"`
	Active     int64  `json:"active"` // -1: the proxy does not count its sessions (Caddy)
	Goroutines int    `json:"goroutines"`
	// memstats only (after two GCs and debug.FreeOSMemory):
	HeapAlloc  uint64 `json:"heap_alloc,omitempty"`
	StackInuse uint64 `json:"stack_inuse,omitempty"`
	Error      string `json:"error,omitempty"`
}

// serveProxyChild runs one proxy as cfg says in front of the upstream, prints
// "LISTEN host:port" on out, then answers commands read line by line on in:
//
//	stats               mallocs, bytes allocated, active sessions (JSON line)
//	memstats            the same after two GCs and debug.FreeOSMemory, plus live heap and stacks
//	profile-start PATH  start a CPU profile into PATH
//	profile-stop        stop it
//	heap-profile PATH   write a heap profile (after a GC) into PATH
//
// It exits when in reaches EOF (the harness ended). The harness reads the
// child's CPU time and RSS from /proc itself.
func serveProxyChild(cfg childConfig, in io.Reader, out io.Writer) error {
	if cfg.upstream == "" {
		return errors.New("-serve-proxy needs -upstream")
	}
	raiseNofile()
	addr, active, err := startChildProxy(cfg)
	if err != nil {
		return fmt.Errorf("%s proxy: %w", cfg.kind, err)
	}
	fmt.Fprintf(out, "LISTEN %s\n", addr)
	return answerCommands(in, out, active)
}

// startChildProxy starts the proxy of cfg.kind serving in the background and
// returns its address and its count of active sessions.
func startChildProxy(cfg childConfig) (addr string, active func() int64, err error) {
	if cfg.kind == "caddy" || cfg.kind == "wsgate-caddy" {
		addr, err := startCaddy(cfg)
		return addr, func() int64 { return -1 }, err
	}
	ln, err := childListener(cfg)
	if err != nil {
		return "", nil, err
	}
	switch cfg.kind {
	case "tcp", "copy":
		tp := &tcpProxy{upstream: cfg.upstream}
		if cfg.kind == "copy" {
			tp.buffer = cfg.copyBuffer
		}
		go tp.serve(ln)
		active = tp.active.Load
	case "wsgate":
		p, err := proxy.New(proxy.Config{Upstreams: []string{"ws://" + cfg.upstream}})
		if err != nil {
			ln.Close()
			return "", nil, err
		}
		go (&http.Server{Handler: p}).Serve(ln)
		active = func() int64 { return int64(p.ActiveSessions()) }
	case "gorilla":
		gp := &gorillaProxy{upstream: cfg.upstream}
		gp.upgrader.CheckOrigin = func(*http.Request) bool { return true }
		go (&http.Server{Handler: gp}).Serve(ln)
		active = gp.active.Load
	default:
		ln.Close()
		return "", nil, fmt.Errorf("-serve-proxy: unknown kind %q (%s)", cfg.kind, strings.Join(childKinds, ", "))
	}
	return ln.Addr().String(), active, nil
}

// childListener listens on a free loopback port, behind TLS when cfg has a
// certificate (HTTP/1.1 only: the clients speak WebSocket over HTTP/1.1).
func childListener(cfg childConfig) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil || cfg.certFile == "" {
		return ln, err
	}
	cert, err := tls.LoadX509KeyPair(cfg.certFile, cfg.keyFile)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}), nil
}

// answerCommands runs the child's command loop until in reaches EOF.
func answerCommands(in io.Reader, out io.Writer, active func() int64) error {
	var prof *os.File // the running CPU profile, if any
	defer func() {
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		var st childStats
		var err error
		switch cmd {
		case "stats", "memstats":
			st = runtimeStats(cmd == "memstats", active)
		case "profile-start":
			prof, err = startCPUProfile(arg)
		case "profile-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				err = prof.Close()
				prof = nil
			}
		case "heap-profile":
			err = writeHeapProfile(arg)
		default:
			err = errors.New("unknown command " + cmd)
		}
		if err != nil {
			st.Error = err.Error()
		}
		if err := enc.Encode(&st); err != nil {
			return err
		}
	}
	return sc.Err()
}

// runtimeStats reads the runtime's counters; with gc, after two GCs and
// returning freed memory to the OS, with the live heap and stacks.
func runtimeStats(gc bool, active func() int64) childStats {
	if gc {
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := childStats{Mallocs: ms.Mallocs, TotalAlloc: ms.TotalAlloc, Active: active(), Goroutines: runtime.NumGoroutine()}
	if gc {
		st.HeapAlloc, st.StackInuse = ms.HeapAlloc, ms.StackInuse
	}
	return st
}

// startCPUProfile starts a CPU profile into path.
func startCPUProfile(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// writeHeapProfile writes a heap profile, after a GC, into path.
func writeHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
