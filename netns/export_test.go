package netns

// UseBaseMountNS switches the base mount namespace (mountns.go) off for
// a side-by-side benchmark.
var UseBaseMountNS = &useBaseMountNS
