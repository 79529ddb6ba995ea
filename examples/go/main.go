// A zero-downtime HTTP server for sockvisor, standard library only.
//
// It takes its listening socket from sockvisor (systemd's LISTEN_FDS
// protocol: fd 3, valid only when LISTEN_PID is our pid), sends READY=1 to
// NOTIFY_SOCKET, and on SIGTERM or SIGQUIT stops accepting, finishes the
// requests in flight, and exits 0.
//
//	go build -o myserver ./examples/go
//	sockvisor run --stop-signal SIGTERM --listen 127.0.0.1:8080 -- ./myserver
//
// Go's runtime treats an unhandled SIGQUIT as "dump all goroutines and
// exit 2"; this server handles it, but --stop-signal SIGTERM is the safe
// choice for Go servers.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

const sdListenFdsStart = 3

func inheritedListener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("LISTEN_PID is not this process; run it under sockvisor")
	}
	if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n < 1 {
		return nil, fmt.Errorf("no socket in LISTEN_FDS")
	}
	file := os.NewFile(sdListenFdsStart, "listener")
	defer file.Close()
	return net.FileListener(file)
}

func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Printf("notify: %v", err)
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}

func main() {
	listener, err := inheritedListener()
	if err != nil {
		log.Fatal(err)
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGQUIT)
	done := make(chan struct{})
	go func() {
		<-stop
		// Stops accepting, waits for requests in flight, closes idle
		// keep-alive connections.
		server.Shutdown(context.Background())
		close(done)
	}()
	notify("READY=1")
	if err := server.Serve(listener); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-done
}
