package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd runs a single-member etcd (the server envgate's tests embed) on
// loopback until SIGTERM or SIGINT, for the cluster scenario: it prints
// "ready" once clients may connect.
func runEtcd(args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory (required)")
	client := fs.String("client", "http://127.0.0.1:18490", "client URL")
	peer := fs.String("peer", "http://127.0.0.1:18491", "peer URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("etcd: -dir is required")
	}
	cu, err := url.Parse(*client)
	if err != nil {
		return fmt.Errorf("etcd: -client: %w", err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		return fmt.Errorf("etcd: -peer: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = *dir
	cfg.Name = "bench"
	cfg.LogLevel = "error"
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return errors.New("etcd: not ready after 60s")
	}
	fmt.Println("ready")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigs:
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}
