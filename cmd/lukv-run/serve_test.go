package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "256MiB": 256 << 20, "2GiB": 2 << 30, "512KiB": 512 << 10, "10B": 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-5MiB", "lots", "1.5GiB", "0"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q): no error", bad)
		}
	}
}

// TestServeFlagErrors: bad flags fail before the server starts, naming the flag.
func TestServeFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "cuda"}, "--device"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--kv-memory", "lots"}, "--kv-memory"},
		{[]string{"--kv-memory", "100B"}, "--kv-memory"},
		{[]string{"--kv-method", "magic", "--kv-compression", "0.5"}, "--kv-method/--kv-allocator/--kv-compression: serve: default eviction: kv_method"},
		{[]string{"--kv-compression", "1.5", "--kv-method", "knorm"}, "--kv-method/--kv-allocator/--kv-compression: serve: default eviction: kv_compression"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		err := runServe(c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: got %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
