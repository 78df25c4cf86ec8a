package app

import (
	"io"
	"net/http"
	"net/http/pprof"
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

func (a *App) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", a.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /generate-token", a.handleUserToken)
	mux.HandleFunc("POST /admin/generate-token", a.handleAdminToken)
	if a.Cfg.Server.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, codec.NewError(codec.CodeNotFound, "no such endpoint"))
	})
	return mux
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
	writeJSON(w, code, map[string]any{"status": status, "dependencies": deps})
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

func apiKeyOf(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	return r.URL.Query().Get("x-api-key")
}

func (a *App) handleUserToken(w http.ResponseWriter, r *http.Request) {
	if !a.keys.CheckUser(apiKeyOf(r)) {
		writeError(w, codec.NewError(codec.CodeInvalidAPIKey, "invalid API key"))
		return
	}
	var req userTokenReq
	if e := readBody(r, &req); e != nil {
		writeError(w, e)
		return
	}
	ttl, e := lifetime(req.ExpiresInSeconds)
	if e == nil && (req.CompanyID == "" || req.AgentID == "" || req.UserID == "") {
		e = codec.NewError(codec.CodeBadRequest, "company_id, agent_id and user_id are required")
	}
	if e != nil {
		writeError(w, e)
		return
	}
	now := time.Now()
	tok, err := a.Minter.MintUser(session.UserClaims{CompanyID: req.CompanyID, AgentID: req.AgentID, UserID: req.UserID,
		ExpiresAt: now.Add(ttl), IssuedAt: now})
	if err != nil {
		writeError(w, codec.NewError(codec.CodeInternalServerError, "could not mint token"))
		return
	}
	writeJSON(w, 200, tokenResp{Token: tok, ExpiresAt: now.Add(ttl).UTC().Format(time.RFC3339)})
}

func (a *App) handleAdminToken(w http.ResponseWriter, r *http.Request) {
	if !a.keys.CheckAdmin(apiKeyOf(r)) {
		writeError(w, codec.NewError(codec.CodeInvalidAPIKey, "invalid API key"))
		return
	}
	var req adminTokenReq
	if e := readBody(r, &req); e != nil {
		writeError(w, e)
		return
	}
	ttl, e := lifetime(req.ExpiresInSeconds)
	if e == nil && req.AdminID == "" {
		e = codec.NewError(codec.CodeBadRequest, "admin_id is required")
	}
	if e != nil {
		writeError(w, e)
		return
	}
	now := time.Now()
	tok, err := a.Minter.MintAdmin(session.AdminClaims{AdminID: req.AdminID, ExpiresAt: now.Add(ttl), IssuedAt: now,
		SubscribedCompanyID: req.SubscribedCompanyID, SubscribedAgentID: req.SubscribedAgentID,
		CompanyIDRestriction: req.CompanyIDRestriction})
	if err != nil {
		writeError(w, codec.NewError(codec.CodeInternalServerError, "could not mint token"))
		return
	}
	writeJSON(w, 200, tokenResp{Token: tok, ExpiresAt: now.Add(ttl).UTC().Format(time.RFC3339)})
}

func lifetime(secs int64) (time.Duration, *codec.Error) {
	d := time.Duration(secs) * time.Second
	if secs <= 0 || d > maxTokenLifetime {
		return 0, codec.NewError(codec.CodeBadRequest, "expires_in_seconds must be between 1 and 604800")
	}
	return d, nil
}

func readBody(r *http.Request, v any) *codec.Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return codec.NewError(codec.CodeBadRequest, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	if err != nil {
		return codec.NewError(codec.CodeBadRequest, "could not read body")
	}
	if err := sonic.Unmarshal(body, v); err != nil {
		return codec.NewError(codec.CodeBadRequest, "invalid JSON body")
	}
	return nil
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.HTTPStatus())
	_, _ = w.Write(e.AppendJSON(nil))
}
