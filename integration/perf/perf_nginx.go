package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// nginxPath is where Debian's nginx package (or nginx-light) installs nginx.
const nginxPath = "/usr/sbin/nginx"

// nginxInstalled reports whether the nginx variant can run.
func nginxInstalled() bool {
	fi, err := os.Stat(nginxPath)
	return err == nil && fi.Mode().IsRegular()
}

// nginxSetup is what the config template needs.
type nginxSetup struct {
	Dir, Listen, Upstream string
	CertFile, KeyFile     string // TLS on the client leg when set
	Connections, Nofile   int
}

// nginxConf is a config for WebSocket proxying as nginx's documentation gives
// it: HTTP/1.1 upstream, Upgrade and Connection passed on, no buffering, long
// read timeout. One worker; every path nginx writes is in the temp dir. With
// TLS, the protocols are those of nginx 1.23.4 and later, so that TLS 1.3 is
// negotiated as with the other variants (1.22, Debian 12's, leaves it out).
var nginxConf = template.Must(template.New("nginx.conf").Parse(`worker_processes 1;
worker_rlimit_nofile {{.Nofile}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
	worker_connections {{.Connections}};
}
http {
	access_log off;
	client_body_temp_path {{.Dir}}/body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	server {
		listen {{.Listen}}{{if .CertFile}} ssl{{end}};
{{- if .CertFile}}
		ssl_certificate {{.CertFile}};
		ssl_certificate_key {{.KeyFile}};
		ssl_protocols TLSv1.2 TLSv1.3;
{{- end}}
		location / {
			proxy_pass http://{{.Upstream}};
			proxy_http_version 1.1;
			proxy_set_header Upgrade $http_upgrade;
			proxy_set_header Connection "upgrade";
			proxy_buffering off;
			proxy_read_timeout 3600s;
			proxy_send_timeout 3600s;
		}
	}
}
`))

// startNginx writes a config for s (Listen and Dir are chosen here, under
// base) and runs nginx in the foreground until it accepts connections and its
// worker is up. The proxy's processes are the master and its worker.
func startNginx(s nginxSetup, base string, log io.Writer) (*proxyProc, error) {
	dir, err := os.MkdirTemp(base, "nginx-")
	if err != nil {
		return nil, err
	}
	if s.Listen, err = freeLoopbackAddr(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.Dir = dir
	var conf bytes.Buffer
	if err := nginxConf.Execute(&conf, s); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(nginxPath, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = log, log
	childAttrs(cmd, syscall.SIGTERM) // the master then stops its worker
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting nginx: %w", err)
	}
	p := &proxyProc{kind: "nginx", addr: s.Listen, cmd: cmd, pids: []int{cmd.Process.Pid}, dir: dir,
		logFile: filepath.Join(dir, "error.log"), exited: make(chan struct{})}
	p.watch()
	if err := p.waitNginx(5 * time.Second); err != nil {
		tail := p.logTail()
		p.stop()
		return nil, fmt.Errorf("nginx: %w%s", err, tail)
	}
	p.fds0 = p.fds()
	return p, nil
}

// fdsSettle waits (at most limit) until the proxy's descriptor count stays
// the same over 20 ms.
func (p *proxyProc) fdsSettle(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for n := p.fds(); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m := p.fds()
		if m == n {
			return
		}
		n = m
	}
}

// waitNginx waits until nginx accepts connections and its master has a
// worker, which it then adds to p.pids.
func (p *proxyProc) waitNginx(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-p.exited:
			return errors.New("exited at startup")
		default:
		}
		if workers := childPids(p.cmd.Process.Pid); len(workers) > 0 {
			if c, err := net.Dial("tcp", p.addr); err == nil {
				c.Close()
				p.pids = append(p.pids[:1], workers...)
				p.fdsSettle(time.Second) // the worker closes the probing connection
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready on %s after %s", p.addr, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nginxVersion is what `nginx -v` says, or "not installed".
func nginxVersion() string {
	if !nginxInstalled() {
		return "not installed"
	}
	out, _ := exec.Command(nginxPath, "-v").CombinedOutput()
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "version: ")
	return v
}
