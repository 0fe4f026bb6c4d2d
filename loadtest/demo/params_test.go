package demo

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestQueryParams(t *testing.T) {
	t.Parallel()
	h, err := Handler(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		want   int
	}{
		{"/slow?ms=0", http.StatusOK},
		{"/slow?ms=abc", http.StatusBadRequest},
		{"/slow?ms=-1", http.StatusBadRequest},
		{"/slow?ms=1.5", http.StatusBadRequest},
		{"/slow?ms=1s", http.StatusBadRequest},
		{"/slow?ms=3600001", http.StatusBadRequest},
		{"/slow?ms=99999999999999999999", http.StatusBadRequest},
		{"/events?count=1&interval=1ms", http.StatusOK},
		{"/events?count=1&interval=2s", http.StatusOK},
		{"/events?count=1", http.StatusOK},
		{"/events?interval=abc", http.StatusBadRequest},
		{"/events?interval=100", http.StatusBadRequest},
		{"/events?interval=0s", http.StatusBadRequest},
		{"/events?interval=-1s", http.StatusBadRequest},
		{"/events?interval=2h", http.StatusBadRequest},
		{"/events?count=0", http.StatusBadRequest},
		{"/events?count=-3", http.StatusBadRequest},
		{"/events?count=x", http.StatusBadRequest},
		{"/download?bytes=10", http.StatusOK},
		{"/download?bytes=0", http.StatusOK},
		{"/download?bytes=-1", http.StatusBadRequest},
		{"/download?bytes=1k", http.StatusBadRequest},
		{"/download?bytes=2000000000000", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
			if rec.Code != tt.want {
				t.Fatalf("GET %s = %d %q, want %d", tt.target, rec.Code, rec.Body, tt.want)
			}
			if tt.want == http.StatusBadRequest {
				name, _, _ := strings.Cut(strings.SplitN(tt.target, "?", 2)[1], "=")
				if !strings.Contains(rec.Body.String(), name+"=") {
					t.Errorf("400 body %q does not name parameter %s", rec.Body, name)
				}
			}
		})
	}
}

func TestWantsJSONAcrossHeaderLines(t *testing.T) {
	t.Parallel()
	if !wantsJSON([]string{"text/plain", "application/json"}) {
		t.Error("Accept split over two header lines: want JSON")
	}
	if wantsJSON([]string{"application/json", "text/html"}) {
		t.Error("Accept naming text/html on a second line: want HTML")
	}
	if wantsJSON([]string{"application/json;;;=", "garbage/"}) {
		t.Error("unparsable Accept: want HTML")
	}
}
