/*
 * apps_url.h - KOUMPA_APPS_URL, the public address of the generated apps, in
 * one of two forms:
 *
 *   path form  http://127.0.0.1:8081            every app on one origin, at
 *              {apps_url}/{project_id}/          (the default)
 *   host form  https://{project}.apps.example.com   each app on its own origin,
 *              http://{project}.localhost:8081       at the root of its host
 *
 * In the host form {project} is the whole leftmost label of the host and is
 * replaced by the project's host label: its id with '_' written '-'
 * ("prj_abc123" -> "prj-abc123"), since a host name is letters, digits and
 * hyphens (RFC 1123; TLS wildcard certificates and resolvers refuse '_').
 * Ids are "prj_" + [a-z0-9], so the mapping is one-to-one.
 *
 * In both forms a version is the path segment KP_APPS_URL_VERSION_SEGMENT
 * ("@v{n}") after the app's root: "@" is never in an app's own paths
 * (gen/fileblocks.h), so an app's folder named "v2/" cannot be taken for
 * version 2. In the host form every version of a project shares the
 * project's origin, so what an app keeps in localStorage survives a new
 * version, and no two projects share one.
 *
 * The template is the raw string of cfg->apps_url (config.c checks it once
 * with kp_apps_url_check at start-up); the functions here parse it on each
 * call, which costs a few string scans and keeps kp_config plain.
 */
#ifndef KP_APPS_URL_H
#define KP_APPS_URL_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_APPS_URL_PLACEHOLDER "{project}"
#define KP_APPS_URL_VERSION_SEGMENT "@v"

/* KP_OK when tmpl is a path-form URL or a valid host-form template; else
 * KP_EINVAL with a message naming KOUMPA_APPS_URL and what is wrong. */
kp_status kp_apps_url_check(const char *tmpl, kp_err *err);

/* 1 when tmpl is a (valid) host-form template: each app on its own origin. */
int kp_apps_url_per_project(const char *tmpl);

/* Appends the public URL of version n of a project to out:
 * "{apps_url}/{project_id}/@v{n}/" or "{scheme}://{label}.{domain}/@v{n}/".
 * Returns 0, or -1 when out of memory. */
int kp_apps_url_version(const char *tmpl, const char *project_id, int64_t n, kp_buf *out);

/* The project a Host header names under a host-form template: writes its id
 * (NUL-terminated) to id and returns 0; -1 when host is NULL, is not
 * "{label}.{domain}" (any port, case-insensitive), or the label is not a
 * project's, or tmpl is not in the host form. */
int kp_apps_url_project_of_host(const char *tmpl, const char *host, char *id, size_t idsize);

#endif
