package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/vigil-iot/vigil/gateway/amqp"
	"github.com/vigil-iot/vigil/server"
)

// redact hides the password of a URL for logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	def := server.DefaultConfig("")
	dataDir := fs.String("data", envOr("VIGIL_DATA", "vigil-data"), "data directory holding vigil.duckdb (env VIGIL_DATA)")
	mqttAddr := fs.String("mqtt", def.MQTT.Addr, "MQTT device gateway address")
	httpAddr := fs.String("http", def.HTTPAddr, "HTTP API address; empty disables the API")
	token := fs.String("api-token", "", "require this bearer token on the HTTP API (env VIGIL_API_TOKEN)")
	tlsCert := fs.String("tls-cert", "", "serve MQTT (MQTTS) and the HTTP API (HTTPS) over TLS with this PEM certificate chain; reread when it changes")
	tlsKey := fs.String("tls-key", "", "the PEM private key of --tls-cert")
	maxRows := fs.Int("batch-rows", def.Ingest.MaxRows, "commit a batch when it holds this many readings")
	maxDelay := fs.Duration("batch-delay", def.Ingest.MaxDelay, "commit a batch at the latest this long after its first message")
	patientDelay := fs.Duration("broker-batch-delay", def.Ingest.PatientDelay, "commit a batch holding only messages a broker keeps until vigil accepts them (AMQP) at the latest this long after its first (at least --batch-delay)")
	warmWindow := fs.Duration("warm-window", def.WarmWindow, "a new model warms on stored history within this long before the newest reading (0: all of it)")
	scorers := fs.Int("scorers", 0, "goroutines scoring readings, each for its share of the devices (0: one per CPU)")
	dbThreads := fs.Int("duckdb-threads", 0, "threads DuckDB runs queries on (0: half the CPUs); more speed up large queries, but each one beyond the first costs CPU on every commit")
	sqlFiles := fs.Bool("sql-file-access", false, "let API queries read files and URLs the server can reach (read_csv, read_parquet, ...): only where every API user may read what this process may")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	amqpDef := amqp.DefaultConfig()
	amqpURL := fs.String("amqp", "", "also link to an AMQP 1.0 broker: amqp[s]://USER:PASS@HOST:PORT")
	amqpVHost := fs.String("amqp-vhost", "", "the broker's virtual host (RabbitMQ)")
	amqpSource := fs.String("amqp-source", strings.Join(amqpDef.Sources, ","), "comma-separated addresses vigil receives telemetry from, a receiver each (the queues of this vigil's shard of the fleet)")
	amqpCommands := fs.String("amqp-commands", amqpDef.CommandAddress, "address template for a device's commands; {id} is the device id")
	amqpFeedback := fs.String("amqp-feedback", amqpDef.Feedback, "address devices send command acknowledgements to")
	amqpTrust := fs.String("amqp-trust-property", "", "take the device id from this application property (a trusted field gateway) instead of the user-id")
	amqpAnnotation := fs.String("amqp-device-annotation", "", "take the device id from this message annotation, which the hub stamps on every message (Azure IoT Hub's built-in endpoint: iothub-connection-device-id)")
	amqpIoTHub := fs.String("amqp-iothub", "", "send commands through Azure IoT Hub: its service connection string, HostName=HUB.azure-devices.net;SharedAccessKeyName=NAME;SharedAccessKey=KEY "+
		"(default $VIGIL_AMQP_IOTHUB); --amqp then names the hub's built-in endpoint, for telemetry")
	amqpGateways := fs.String("amqp-trusted-gateways", "", "comma-separated user-ids of the field gateways that may name a device in --amqp-trust-property or --amqp-device-annotation; "+
		"any other sender may name only itself (default: anyone who can send to the source)")
	amqpCA := fs.String("amqp-ca", "", "amqps://: trust the broker's certificate when one of the PEM CA certificates in this file signs it (default: the system's roots)")
	amqpCert := fs.String("amqp-cert", "", "amqps://: present this PEM client certificate (chain) to a broker that asks for one; reread when it changes")
	amqpKey := fs.String("amqp-key", "", "the PEM private key of --amqp-cert")
	amqpCredit := fs.Int("amqp-credit", amqpDef.Credit, fmt.Sprintf("messages the broker may deliver on each source before vigil settles them (at least %d); bounds the memory in flight: credit × message size × sources", amqp.MinCredit))
	amqpMaxBody := fs.Int("amqp-max-body", amqpDef.MaxBody, "largest telemetry body taken from the broker, in bytes; a larger one is rejected")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := server.DefaultConfig(*dataDir)
	cfg.MQTT.Addr, cfg.HTTPAddr = *mqttAddr, *httpAddr
	cfg.APIToken = *token
	if cfg.APIToken == "" {
		cfg.APIToken = envOr("VIGIL_API_TOKEN", "")
	}
	cfg.Ingest.MaxRows, cfg.Ingest.MaxDelay = *maxRows, *maxDelay
	cfg.Ingest.PatientDelay = *patientDelay
	cfg.Scorers, cfg.Store.Threads, cfg.Store.ExternalAccess = *scorers, *dbThreads, *sqlFiles
	cfg.WarmWindow = *warmWindow
	if *tlsCert != "" || *tlsKey != "" {
		certs, err := loadCertFiles(*tlsCert, *tlsKey, 10*time.Second)
		if err != nil {
			return err
		}
		cfg.MQTT.TLS, cfg.HTTPTLS = certs.config(), certs.config()
	}
	brokerTLSCfg, err := brokerTLS(*amqpURL, *amqpCA, *amqpCert, *amqpKey)
	if err != nil {
		return err
	}
	if *amqpURL != "" {
		ac := amqpDef
		ac.URL, ac.VHost, ac.CommandAddress, ac.Feedback, ac.TrustProperty = *amqpURL, *amqpVHost, *amqpCommands, *amqpFeedback, *amqpTrust
		ac.Sources, ac.TrustedGateways, ac.DeviceAnnotation = commaList(*amqpSource), commaList(*amqpGateways), *amqpAnnotation
		ac.MaxBody, ac.Credit, ac.TLS = *amqpMaxBody, *amqpCredit, brokerTLSCfg
		hub := *amqpIoTHub
		if hub == "" {
			hub = os.Getenv("VIGIL_AMQP_IOTHUB")
		}
		if hub != "" {
			sas, err := amqp.ParseIoTHubConnectionString(hub)
			if err != nil {
				return err
			}
			ac.UseIoTHub(sas)
		}
		cfg.AMQP = &ac
	} else if *amqpIoTHub != "" {
		return errors.New("--amqp-iothub sends commands through the hub; name its built-in endpoint for the telemetry with --amqp amqps://KEYNAME:KEY@NAMESPACE.servicebus.windows.net")
	}
	log := newLogger(stderr, *logLevel)
	srv, err := server.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	api := "disabled"
	if a := srv.HTTPAddr(); a != "" {
		api = "http://" + a
		if cfg.HTTPTLS != nil {
			api = "https://" + a
		}
	}
	broker := "none"
	if cfg.AMQP != nil {
		broker = redact(cfg.AMQP.URL)
	}
	log.Info("vigil serving", "mqtt", srv.MQTTAddr(), "amqp", broker, "api", api, "data", *dataDir, "devices", len(srv.Store().Devices()))
	if a := srv.HTTPAddr(); a != "" && cfg.APIToken == "" && !loopbackOnly(a) {
		log.Warn("the HTTP API has no token and listens beyond this machine: whoever reaches "+a+" can read every reading, register devices and models; set --api-token (or VIGIL_API_TOKEN) or listen on 127.0.0.1", "api", api)
	}
	<-ctx.Done()
	log.Info("shutting down: committing in-flight batches")
	if err := srv.Close(context.Background()); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}

// loopbackOnly reports whether a listening address (host:port) takes
// connections from this machine only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
