// Command lukv-run runs lukv: generate text with KV-cache eviction, profile LU-KV budget
// curves, evaluate and benchmark.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// version is lukv's version, recorded in the artifacts it writes.
const version = "0.1.0"

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"generate", "generate text from a prompt (optionally with KV-cache eviction)", runGenerate},
		{"profile", "profile a model offline to make its LU-KV budget curve", runProfile},
		{"eval", "evaluate methods on a RULER-style suite (lukv-run eval ruler --help)", runEval},
		{"serve", "serve the model over an OpenAI-compatible HTTP API with continuous batching and per-request eviction", runServe},
		{"bench", "measure prefill, decode (full and compressed KV), eviction overhead and memory against the floors", runBench},
		{"version", "print lukv's version", func(_ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "lukv", version)
			return nil
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "lukv-run: LLM inference with per-head KV-cache eviction (LU-KV).\n\nUsage: lukv-run <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'lukv-run <command> --help' for a command's flags.\n")
}

// activeCommand is the command being run, e.g. "generate".
var activeCommand string

// errUsage marks an error already explained by printed usage.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			activeCommand = c.name // backendFor's --device cuda reads it (cudaTensorCores)
			return c.run(args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "lukv-run:", err)
		}
		os.Exit(1)
	}
}
