// main.js - the dashboard's entry point (placeholder until the router lands): reads /config.json.
const status = document.createElement('p');
status.setAttribute('role', 'status');
document.getElementById('app').append(status);
fetch('config.json')
  .then((r) => r.json())
  .then(() => { status.textContent = 'Ready.'; })
  .catch(() => { status.textContent = 'The server cannot be reached.'; });
