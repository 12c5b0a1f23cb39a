// apps-host.js - CloudFront Function (viewer request, cloudfront-js-2.0) of the apps origin when each
// app has its own origin (var.apps_domain set: KOUMPA_APPS_URL=https://{project}.DOMAIN, see
// src/core/apps_url.h). The host's leftmost label prj-{id} names the project prj_{id} (a host name
// has no '_'), the path /@v{n}/{path} its version n, exactly as the self-hosted apps listener reads
// them (src/api/apps_origin.c, parse_host_and_path): https://prj-{id}.DOMAIN/@v{n}/{path} becomes the
// S3 key apps/prj_{id}/v{n}/{path} (src/gen/publish.c; the origin path adds "apps"). A folder gets its
// index.html, /@v{n} its trailing slash. "@" is never in an app's own paths (src/gen/fileblocks.h), so
// an app's folder named v2/ is /v2/ and never version 2. The unversioned / (the latest ready version)
// needs the database: on AWS the API's version URLs are the ones to use, so it is a 404 saying so;
// so is a host that names no project.
function notFound(text) {
  return {
    statusCode: 404,
    statusDescription: 'Not Found',
    headers: { 'content-type': { value: 'text/plain; charset=utf-8' }, 'cache-control': { value: 'no-cache' } },
    body: { encoding: 'text', data: '404 ' + text + '\n' },
  };
}

function handler(event) {
  var request = event.request;
  var host = request.headers.host ? request.headers.host.value.toLowerCase() : '';
  var project = host.match(/^prj-([a-z0-9]+)\./);
  if (!project) {
    return notFound('no app at this host name: each app is served at https://prj-{id}.<apps domain>/@v{n}/');
  }
  var m = request.uri.match(/^\/@v([1-9][0-9]{0,10})(\/.*)?$/);
  if (!m) {
    return notFound('not found: a version of the app is at /@v{n}/ (the URL the API gives)');
  }
  if (m[2] === undefined) {
    return { statusCode: 301, statusDescription: 'Moved Permanently', headers: { location: { value: request.uri + '/' } } };
  }
  var file = m[2];
  if (file.charAt(file.length - 1) === '/') {
    file += 'index.html';
  }
  request.uri = '/prj_' + project[1] + '/v' + m[1] + file;
  return request;
}
