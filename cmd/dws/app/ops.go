package app

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/bytedance/sonic"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/session"
)

// maxTokenLifetime caps expires_in_seconds on the minting endpoints: a
// week is far beyond any browser session and keeps leaked tokens short-lived.
const maxTokenLifetime = 7 * 24 * time.Hour

// Limits of the ops HTTP server (issue 9, finding 7). The ops port serves
// probes, a scrape and two small JSON bodies: none of them needs more than
// a few kilobytes or seconds, so anything larger or slower is a client
// holding resources, not a client being served.
const (
	// opsMaxBodyBytes caps a mint request body; a real one is < 300 bytes.
	opsMaxBodyBytes = 16 << 10
	// opsMaxHeaderBytes caps the request head (net/http answers 431 above
	// it, with its own 4 KiB of slack).
	opsMaxHeaderBytes = 16 << 10
	// opsReadHeaderTimeout and opsReadTimeout bound a slow-loris client.
	opsReadHeaderTimeout = 5 * time.Second
	opsReadTimeout       = 10 * time.Second
	// opsWriteTimeout bounds every answer but a pprof profile or trace,
	// which run for the ?seconds= the caller asks (see writeDeadlines).
	opsWriteTimeout = 30 * time.Second
	// opsIdleTimeout closes kept-alive connections nobody uses.
	opsIdleTimeout = 60 * time.Second
	// pprofMaxSeconds caps how long a profile or trace may hold its
	// connection open.
	pprofMaxSeconds = 600
)

// newOpsServer returns the ops listener's server with the limits above.
// WriteTimeout stays 0 on purpose: net/http/pprof refuses any profile
// longer than the server's WriteTimeout, so the write deadline is set per
// request instead (writeDeadlines).
func (a *App) newOpsServer(loopback bool) *http.Server {
	return &http.Server{
		Handler:           writeDeadlines(a.opsHandler(loopback)),
		ReadHeaderTimeout: opsReadHeaderTimeout,
		ReadTimeout:       opsReadTimeout,
		IdleTimeout:       opsIdleTimeout,
		MaxHeaderBytes:    opsMaxHeaderBytes,
	}
}

// writeDeadlines gives each request opsWriteTimeout to be answered, and a
// pprof profile or trace the duration it asked for plus that timeout.
func writeDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := opsWriteTimeout
		if r.URL.Path == "/debug/pprof/profile" || r.URL.Path == "/debug/pprof/trace" {
			secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
			if err != nil || secs <= 0 {
				secs = 30 // pprof's own default
			}
			d += time.Duration(min(secs, pprofMaxSeconds)) * time.Second
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		next.ServeHTTP(w, r)
	})
}

// readyChecks are the readiness probes of SPEC §1 by dependency name: a
// status text, or an error when the dependency is hard and down.
func (a *App) readyChecks() map[string]func() (string, error) {
	m := map[string]func() (string, error){
		"listener": func() (string, error) { return "ok", nil },
	}
	for k, v := range a.extraChecks {
		m[k] = v
	}
	return m
}

// opsHandler routes the ops port. loopback tells whether the listener is
// bound to a loopback address: pprof is served openly only there.
func (a *App) opsHandler(loopback bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", a.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /generate-token", a.issuerOnly(a.handleUserToken))
	mux.HandleFunc("POST /admin/generate-token", a.issuerOnly(a.handleAdminToken))
	// The reference browser client and its demo page (static.go).
	mux.HandleFunc("GET /client/dws-client.js", serveClientFile("dws-client.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /client/demo.html", serveClientFile("demo.html", "text/html; charset=utf-8"))
	if a.Cfg.Server.Pprof {
		guard := func(h http.HandlerFunc) http.HandlerFunc { return h }
		if !loopback {
			guard = a.issuerOnly
		}
		mux.HandleFunc("/debug/pprof/", guard(pprof.Index))
		mux.HandleFunc("/debug/pprof/profile", guard(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", guard(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", guard(pprof.Trace))
		// No /debug/pprof/cmdline: it shows the process's arguments, and
		// `--set auth.…=secret` is one of them.
		mux.HandleFunc("/debug/pprof/cmdline", notFound)
	}
	mux.HandleFunc("/", notFound)
	return mux
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, codec.NewError(codec.CodeNotFound, "no such endpoint"))
}

// issuerDigest is the SHA-256 of auth.issuer_api_key, or nil when minting
// is disabled. Comparing digests keeps the check constant-time whatever
// the length of the key a caller sends.
func issuerDigest(key string) []byte {
	if key == "" {
		return nil
	}
	d := sha256.Sum256([]byte(key))
	return d[:]
}

// issuerOnly admits requests carrying auth.issuer_api_key in X-API-Key
// (SPEC §3). The general and admin API keys travel in browser URLs, so
// they never mint: a wrong key is 401, an unset issuer key 403.
func (a *App) issuerOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.issuer == nil {
			writeError(w, codec.NewError(codec.CodeForbidden, "token minting disabled").
				WithDetails("set auth.issuer_api_key to enable it"))
			return
		}
		given := sha256.Sum256([]byte(r.Header.Get("X-API-Key")))
		if subtle.ConstantTimeCompare(given[:], a.issuer) != 1 {
			writeError(w, codec.NewError(codec.CodeInvalidAPIKey, "invalid API key").
				WithDetails("this endpoint takes auth.issuer_api_key in header X-API-Key"))
			return
		}
		next(w, r)
	}
}

// opsListenerIsLoopback reports whether ln accepts connections from this
// machine only.
func opsListenerIsLoopback(ln net.Listener) bool {
	tcp, ok := ln.Addr().(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func (a *App) handleReady(w http.ResponseWriter, _ *http.Request) {
	status, code := "ready", 200
	deps := map[string]string{}
	for name, check := range a.readyChecks() {
		text, err := check()
		if err != nil {
			text = err.Error()
			status, code = "not_ready", 503
		}
		deps[name] = text
	}
	if a.Draining() {
		status, code = "draining", 503
	}
	// partitions: the event partitions this pod consumes (SPEC §5); an SRE
	// reads the fleet's balance off the pods' /ready.
	owned := a.OwnedPartitions()
	if owned == nil {
		owned = []int{}
	}
	writeJSON(w, code, map[string]any{"status": status, "dependencies": deps, "partitions": owned})
}

type userTokenReq struct {
	CompanyID        string `json:"company_id"`
	AgentID          string `json:"agent_id"`
	UserID           string `json:"user_id"`
	ExpiresInSeconds int64  `json:"expires_in_seconds"`
}

type adminTokenReq struct {
	AdminID              string `json:"admin_id"`
	ExpiresInSeconds     int64  `json:"expires_in_seconds"`
	SubscribedCompanyID  string `json:"subscribed_company_id"`
	SubscribedAgentID    string `json:"subscribed_agent_id"`
	CompanyIDRestriction string `json:"company_id_restriction"`
}

type tokenResp struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// decodeUserTokenReq reads and checks a POST /generate-token body: the
// first missing field is named before the lifetime is judged, so a
// newcomer's first mistake gets the most useful answer.
func decodeUserTokenReq(r *http.Request, w http.ResponseWriter) (userTokenReq, time.Duration, *codec.Error) {
	var req userTokenReq
	if e := readBody(w, r, &req); e != nil {
		return req, 0, e
	}
	if e := required("company_id", req.CompanyID, "agent_id", req.AgentID, "user_id", req.UserID); e != nil {
		return req, 0, e
	}
	ttl, e := lifetime(req.ExpiresInSeconds)
	return req, ttl, e
}

// decodeAdminTokenReq is decodeUserTokenReq for POST /admin/generate-token.
func decodeAdminTokenReq(r *http.Request, w http.ResponseWriter) (adminTokenReq, time.Duration, *codec.Error) {
	var req adminTokenReq
	if e := readBody(w, r, &req); e != nil {
		return req, 0, e
	}
	if e := required("admin_id", req.AdminID); e != nil {
		return req, 0, e
	}
	ttl, e := lifetime(req.ExpiresInSeconds)
	return req, ttl, e
}

// required names the first empty field of name, value pairs.
func required(pairs ...string) *codec.Error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return codec.NewError(codec.CodeBadRequest, pairs[i]+" is required")
		}
	}
	return nil
}

func (a *App) handleUserToken(w http.ResponseWriter, r *http.Request) {
	req, ttl, e := decodeUserTokenReq(r, w)
	if e != nil {
		writeBodyError(w, e)
		return
	}
	now := time.Now()
	tok, err := a.Minter.MintUser(session.UserClaims{CompanyID: req.CompanyID, AgentID: req.AgentID, UserID: req.UserID,
		ExpiresAt: now.Add(ttl), IssuedAt: now})
	if err != nil {
		writeError(w, codec.NewError(codec.CodeBadRequest, "could not mint token").WithDetails(err.Error()))
		return
	}
	writeJSON(w, 200, tokenResp{Token: tok, ExpiresAt: now.Add(ttl).UTC().Format(time.RFC3339)})
}

func (a *App) handleAdminToken(w http.ResponseWriter, r *http.Request) {
	req, ttl, e := decodeAdminTokenReq(r, w)
	if e != nil {
		writeBodyError(w, e)
		return
	}
	now := time.Now()
	tok, err := a.Minter.MintAdmin(session.AdminClaims{AdminID: req.AdminID, ExpiresAt: now.Add(ttl), IssuedAt: now,
		SubscribedCompanyID: req.SubscribedCompanyID, SubscribedAgentID: req.SubscribedAgentID,
		CompanyIDRestriction: req.CompanyIDRestriction})
	if err != nil {
		writeError(w, codec.NewError(codec.CodeBadRequest, "could not mint token").WithDetails(err.Error()))
		return
	}
	writeJSON(w, 200, tokenResp{Token: tok, ExpiresAt: now.Add(ttl).UTC().Format(time.RFC3339)})
}

func lifetime(secs int64) (time.Duration, *codec.Error) {
	if secs <= 0 || secs > int64(maxTokenLifetime/time.Second) {
		return 0, codec.NewError(codec.CodeBadRequest, "expires_in_seconds must be between 1 and 604800")
	}
	return time.Duration(secs) * time.Second, nil
}

// errBodyTooLarge marks a body over opsMaxBodyBytes: answered 413, not
// "invalid JSON" as a silently truncated body used to be.
var errBodyTooLarge = codec.NewError(codec.CodeBadRequest, "request body too large").
	WithDetails(fmt.Sprintf("at most %d bytes", opsMaxBodyBytes))

func readBody(w http.ResponseWriter, r *http.Request, v any) *codec.Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return codec.NewError(codec.CodeBadRequest, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, opsMaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case err != nil:
		return codec.NewError(codec.CodeBadRequest, "could not read body")
	}
	if err := sonic.Unmarshal(body, v); err != nil {
		return codec.NewError(codec.CodeBadRequest, "invalid JSON body").WithDetails("the body must be one JSON object")
	}
	return nil
}

// writeBodyError answers a decoding failure: 413 for an oversized body
// (SPEC §7 shape, code BadRequest), the code's own status otherwise.
func writeBodyError(w http.ResponseWriter, e *codec.Error) {
	if e == errBodyTooLarge {
		writeErrorStatus(w, http.StatusRequestEntityTooLarge, e)
		return
	}
	writeError(w, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := sonic.Marshal(v)
	if err != nil {
		status, b = 500, []byte(`{"code":"InternalServerError","message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e *codec.Error) {
	writeErrorStatus(w, e.HTTPStatus(), e)
}

func writeErrorStatus(w http.ResponseWriter, status int, e *codec.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(e.AppendJSON(nil))
}
