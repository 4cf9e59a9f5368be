// The shell: the token form, the navigation, and one page at a time. Each
// page module exports mount(main, route) and returns a function that stops
// its blocking queries when the operator leaves the page.

import { token, setToken, get } from './api.js';
import * as members from './members.js';
import * as services from './services.js';
import * as kv from './kv.js';
import * as flags from './flags.js';
import * as agent from './agent.js';

const PAGES = { members, services, kv, flags, agent };

let stop = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const slash = hash.indexOf('/');
  const page = slash < 0 ? hash : hash.slice(0, slash);
  const rest = slash < 0 ? '' : hash.slice(slash + 1);
  return PAGES[page] ? { page, rest } : { page: 'members', rest: '' };
}

function show() {
  if (stop) stop();
  const { page, rest } = route();
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.page = page;
  let path = rest;
  try { path = decodeURIComponent(rest); } catch { /* keep it as typed */ }
  stop = PAGES[page].mount(main, path);
}

function showTokenState() {
  document.getElementById('token-state').textContent = token() ? 'token in use' : 'no token';
}

async function showNodeName() {
  try {
    const { data } = await get('/v1/agent/self');
    document.getElementById('node-name').textContent = `· ${data.Config.NodeName} (${data.Config.Datacenter})`;
    document.title = `Shoal · ${data.Config.NodeName}`;
  } catch { /* the pages say why */ }
}

function init() {
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    input.value = '';
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    input.value = '';
    setToken('');
  });
  window.addEventListener('shoal-token', () => {
    showTokenState();
    showNodeName();
    show();
  });
  window.addEventListener('hashchange', () => {
    show();
    document.getElementById('main').focus();
  });
  showTokenState();
  showNodeName();
  show();
}

init();
