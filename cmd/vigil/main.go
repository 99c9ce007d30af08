package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `vigil — telemetry, anomaly detection and corrective commands for device fleets

Usage:
  vigil demo     [--devices N] [--duration D] [--json]   run the whole loop with a simulated fleet
  vigil serve    --data DIR [--mqtt ADDR] [--http ADDR]    serve real devices
  vigil sim      --mqtt ADDR --server URL [--devices N]    drive a simulated fleet against a server
  vigil devices  add NAME [--key K] | list | disable NAME | enable NAME
  vigil query    [--server URL] SQL                        read-only SQL through the HTTP API
  vigil score    --model SPEC --in FILE.csv --out FILE.csv run a detector over a timestamp,value CSV
  vigil train    --model SPEC [--device D] [--metric M] [--default] | --csv FILE --name NAME
                                                          fit and register a model version (serve picks it up)
  vigil train    --multivariate [--device D] [--metrics A,B] [--csv FILE]
                                                          fit a device-level model (DEVICE/*) of metrics together
  vigil models   list [--all] | activate NAME VERSION     the model registry; activate rolls back or forward
  vigil eval nab --data DIR --labels FILE [--model SPEC]   score a detector on the Numenta Anomaly Benchmark
  vigil eval history --labels FILE [--model SPEC]         backtest a detector on stored history against labelled windows
  vigil features --in FILE.csv | --device D [--metric M] [--out FILE.csv]
                                                          the feature table (window, EWMA, seasonal, rate, gap columns) per reading

Run "vigil COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal asks for a clean shutdown; from then on a
		// signal has its default effect, so a second Ctrl-C ends the
		// process even if the shutdown waits on something.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one vigil command and returns its exit code: 0 success, 1 a
// failure while running, 2 a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"demo":     runDemo,
		"serve":    runServe,
		"sim":      runSim,
		"devices":  runDevices,
		"query":    runQuery,
		"score":    runScore,
		"eval":     runEval,
		"features": runFeatures,
		"train":    runTrain,
		"models":   runModels,
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vigil: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintf(stderr, "vigil %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
