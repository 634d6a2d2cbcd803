// Package api is Toygres' HTTP server: the JSON REST API and the login,
// which also guards the browser pages registered on [Server.Pages] (the
// web console, package web, a sibling over the same [app.App] services that
// cmd/toygres mounts; neither package imports the other). It serves an
// open [app.App].
//
// # Conventions
//
// Requests and responses are JSON (Content-Type application/json); every
// timestamp is RFC 3339 in UTC. Request bodies hold one JSON object, no
// unknown fields, and only valid UTF-8 text (invalid bytes or unpaired
// surrogate escapes are refused naming the field, not replaced by U+FFFD);
// they are at most 64 KiB for login, logout and single creates and 1 MiB
// elsewhere. Errors are {"error": "<one line>"} (plus "field", the request
// field at fault, when there is one) with status 400 (bad input
// or JSON), 401 (no or wrong credentials), 403 (cross-origin browser
// request), 404 (unknown), 405, 408 (body not received within the read
// timeout), 409 (name taken, orchestration already finished), 413 (body too
// large), 415 (not JSON), 429 (login rate limit, with Retry-After) or 500
// (internal: the detail goes to the server log with the request id of the
// X-Request-Id header, never to the client). Responses carry Cache-Control:
// no-store, and over TLS Strict-Transport-Security.
//
// # Serving
//
// NewHTTPServer builds the http.Server with timeouts (HTTPOptions: headers
// 10 s, whole request 30 s, response 60 s, idle 2 min by default) and,
// when given a tls.Config, HTTPS (see package tlscert for the self-signed
// certificate and pinning).
//
// # Endpoints
//
//	GET  /health                       public: {"status":"healthy","service":"toygres","version":…}
//	GET  /metrics                      Prometheus text; see Metrics below
//	GET  /login                        HTML sign-in form
//	POST /login                        form → cookie + 303 to /; JSON {username,password} → 200 {token,expires_at}
//	POST /logout                       revokes the session, clears the cookie (303 to /login, or 200 JSON)
//	POST /api/login                    JSON {username,password} → 200 {token,expires_at} (the CLI's "toygres login")
//	POST /api/logout                   revokes the token used → 200
//	GET  /api/session                  200 {user,kind,expires_at}
//	GET  /api/openapi.json             the OpenAPI 3.1 description of all of this (openapi.json)
//
//	GET    /api/instances                     ?all=true&state=running,failed,broken&name=&limit= → 200 InstanceList (newest first, no secrets);
//	                                          default: live instances (creating, running, deleting; broken ones included),
//	                                          all=true (or include_deleted=true): failed and deleted too
//	POST   /api/instances                     CreateInstanceRequest → 202 Instance (+ Location); 400, 409
//	POST   /api/instances/bulk                BulkCreateRequest → 202 BulkResponse; 400/409 before anything is created
//	POST   /api/instances/bulk-delete         BulkDeleteRequest → 202 BulkResponse (per-item status); 400 before any delete
//
// A bulk request in which no item succeeded answers with the first failure's
// status and {"error": …} plus the BulkResponse fields.
//
//	GET    /api/instances/{name}              ?events=50&checks=10 → 200 InstanceDetail with connection_string (with password); 404
//	DELETE /api/instances/{name}              → 202 DeleteResponse: deletes every record of the name not yet deleted
//	                                          (the active instance and failed ones); 404 if unknown or all deleted
//	POST   /api/instances/{name}/purge        → 200 PurgeResponse: removes the records of deleted and failed instances
//	                                          of the name that have nothing left on the data plane; 404, 409 if none can go
//	POST   /api/instances/{name}/repair       → 200 Instance: takes a broken instance's resources over again; 404, 409 (not
//	                                          running, or still broken: the error says why)
//	GET    /api/instances/{name}/health       ?limit=50 → 200 InstanceHealth
//	GET    /api/instances/{name}/events       ?limit=100 → 200 InstanceEvents
//	GET    /api/instances/{name}/logs         ?tail=200 → 200 InstanceLogs (the PostgreSQL server's log)
//
//	GET  /api/orchestrations                   ?status=Running,Failed&name=&prefix=&limit=100&cursor= → 200 OrchestrationList
//	GET  /api/orchestrations/{id}              ?history=full|N → 200 OrchestrationDetail; 404
//	POST /api/orchestrations/{id}/cancel       optional {reason} → 202; 404; 409 if finished
//	POST /api/orchestrations/{id}/recreate     → 202 {new_id,…} (same name, version, input; id <prefix>-<8 hex>); 409 while running
//	POST /api/orchestrations/{id}/raise-event  {event_name, event_data?} → 202; 404; 409 if finished
//
//	GET /api/server/logs    ?limit=200&grep=text&orchestration=ID → 200 ServerLogs (last matching lines of Options.LogFile)
//	GET /api/server/stats   → 200 ServerStats
//	GET /api/server/config  → 200 ServerConfig (secrets masked; retry policies and the data-plane breaker with their sources)
//	GET /api/server/workers → 200 ServerWorkers (the runtime's worker id, concurrency, in-flight work)
//	GET /api/server/retries → 200 ServerRetries (the retry tuning report, duroxide.Suggest's advice included)
//
// # Authentication
//
// There is one account, Options.AdminUser. Its password is hashed with
// PBKDF2-HMAC-SHA256 (600,000 iterations, random salt) in
// StateDir/admin.json; the plain password is never stored. It comes from
// Options.AdminPassword (TOYGRES_ADMIN_PASSWORD), else the stored hash is
// used, else a random password is generated on the first start
// (GeneratedPassword) for the caller to print once.
//
// Signing in creates a session: a random 32-byte token whose SHA-256 is
// kept with its expiry in StateDir/sessions.json (mode 0600), so sessions
// and CLI tokens survive a restart and a stolen file grants nothing. Browser
// sessions live Options.SessionTTL in an HttpOnly, SameSite=Strict cookie
// named toygres_session (Secure when the request came over HTTPS); tokens
// for the CLI live Options.TokenTTL and are sent as "Authorization: Bearer".
// Expired sessions are rejected and dropped. Changing the admin password
// signs every session out.
//
// Every /api/* path except /api/login needs a valid session (401 JSON
// otherwise, also for unknown /api paths); other non-public paths redirect
// to /login. Failed logins are limited per client address to 5 per minute,
// exactly, also under parallel requests (attempts being checked count until
// they are settled); further attempts get 429 with Retry-After until the
// oldest failure is a minute old, and a success clears the count. A logout
// with a token that is no session changes nothing (no write of
// sessions.json). The client address is the
// connection's peer: X-Forwarded-For is not trusted. Unsafe cross-origin
// browser requests are refused (net/http's CrossOriginProtection), and no
// CORS headers are sent.
//
// # Metrics
//
// Prometheus scrapes without a cookie, so /metrics is readable by loopback
// clients without credentials (a local Prometheus or agent), and from other
// addresses with a session token or Options.MetricsToken as a bearer token;
// Options.PublicMetrics opens it to everyone. The metrics hold counts and
// latencies only, never secrets.
//
// # Secrets
//
// Instance passwords appear only in the connection_string of GET
// /api/instances/{name}. They are not in lists, bulk results, errors,
// orchestration inputs (the app keeps them encrypted in the CMS) or
// orchestration history (JSON keys that look like secrets are masked
// anyway), and the request log records method, path, status, duration and
// client only: never bodies, query strings, cookies or Authorization
// headers. Instance server logs are returned with the password masked.
package api
