// apps-path.js - CloudFront Function (viewer request, cloudfront-js-2.0) of the apps origin:
// the URL the API hands out, /{project}/@v{n}/{path} (kp_gen_version_url, src/gen/generator.c),
// becomes the S3 key apps/{project}/v{n}/{path} (src/gen/publish.c; the origin path adds "apps"),
// a folder gets its index.html, /{project}/@v{n} gets its trailing slash, as the self-hosted apps
// origin does (src/api/apps_origin.c, parse_path). The unversioned /{project}/ (the latest ready
// version) needs the database: on AWS the API's version URLs are the ones to use, so it is a 404.
function handler(event) {
  var request = event.request;
  var m = request.uri.match(/^\/(prj_[a-z0-9]+)\/@v([1-9][0-9]{0,10})(\/.*)?$/);
  if (!m) {
    return { statusCode: 404, statusDescription: 'Not Found' };
  }
  if (m[3] === undefined) {
    return { statusCode: 301, statusDescription: 'Moved Permanently', headers: { location: { value: request.uri + '/' } } };
  }
  var file = m[3];
  if (file.charAt(file.length - 1) === '/') {
    file += 'index.html';
  }
  request.uri = '/' + m[1] + '/v' + m[2] + file;
  return request;
}
