// Command lukv-run runs lukv: generate text with KV-cache eviction, profile LU-KV budget
// curves, evaluate and benchmark.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is lukv's version, recorded in the artifacts it writes.
const version = "0.1.0"

type command struct {
	name, summary string
	// run runs the command; ctx is cancelled on Ctrl-C (SIGINT) or SIGTERM.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"generate", "generate text from a prompt (optionally with KV-cache eviction)", runGenerate},
		{"profile", "profile a model offline to make its LU-KV budget curve", runProfile},
		{"eval", "evaluate methods on a RULER-style suite (lukv-run eval ruler --help)", runEval},
		{"convert", "write a checkpoint as a GGUF file (lukv-run convert --to gguf --help)", func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return runConvert(args, stdout, stderr)
		}},
		{"serve", "serve the model over an OpenAI-compatible HTTP API with continuous batching and per-request eviction", runServe},
		{"bench", "measure prefill, decode (full and compressed KV), eviction overhead and memory against the floors", runBench},
		{"version", "print lukv's version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
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

// errUsage marks an error already explained by printed usage.
var errUsage = errors.New("usage")

// errInterrupted marks a command stopped by cancelling its context (Ctrl-C).
var errInterrupted = errors.New("interrupted")

// run runs the command args names. An error that the cancelling of ctx caused wraps
// errInterrupted.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return fmt.Errorf("%s %w (%w)", c.name, errInterrupted, err)
			}
			return err
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func main() {
	// The first Ctrl-C cancels the command's context: the forward pass stops at the next
	// layer and the command exits, saying so. A second one kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	if !errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, "lukv-run:", err)
	}
	if errors.Is(err, errInterrupted) {
		os.Exit(130) // the shell's code for a process stopped by SIGINT
	}
	os.Exit(1)
}
