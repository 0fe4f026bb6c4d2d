package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// Client talks to the admin API over its Unix socket (or, with BaseURL,
// over TCP with a token).
type Client struct {
	// Socket is the Unix socket's path; used when BaseURL is "".
	Socket string
	// BaseURL (http://host:port) and Token reach the TCP listener.
	BaseURL string
	Token   string
	hc      *http.Client
}

func (c *Client) http() *http.Client {
	if c.hc != nil {
		return c.hc
	}
	tr := &http.Transport{Proxy: nil}
	if c.BaseURL == "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Socket)
		}
	}
	c.hc = &http.Client{Transport: tr}
	return c.hc
}

func (c *Client) where() string {
	if c.BaseURL != "" {
		return c.BaseURL
	}
	return c.Socket
}

// Do sends a request to path (with its query) and returns the response
// for a 2xx answer; any other answer is an error with the server's
// message. The caller closes the body.
func (c *Client) Do(ctx context.Context, method, path string) (*http.Response, error) {
	base := "http://envgate"
	if c.BaseURL != "" {
		base = strings.TrimSuffix(c.BaseURL, "/")
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(ActionHeader, "1")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, &StatusError{Code: resp.StatusCode, Msg: e.Error}
		}
		return nil, &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
	}
	return resp, nil
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Code) }

// explain turns a failure to reach the gateway into advice.
func (c *Client) explain(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no gateway answers on %s: is `envgate serve` running (with the same --config)? (%w)", c.where(), err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("not allowed to use %s: run as root, or as a member of the group set by admin.group (%w)", c.where(), err)
	}
	return fmt.Errorf("admin API at %s: %w", c.where(), err)
}

// JSON does a request and decodes its JSON answer into v (if not nil).
func (c *Client) JSON(ctx context.Context, method, path string, v any) error {
	resp, err := c.Do(ctx, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if v == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// EnvPath is the API path of env name, plus suffix.
func EnvPath(name, suffix string) string {
	return "/v1/envs/" + url.PathEscape(name) + suffix
}
