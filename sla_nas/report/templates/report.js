// Sortable tables: a click on a header cell sorts by that column (numbers as numbers).
document.querySelectorAll('table.sortable th').forEach((th, col) => th.onclick = () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.order !== 'asc';
  th.parentNode.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? 'asc' : 'desc';
  const cmp = (x, y) => (x === '' || y === '') ? (x === '') - (y === '') :
    (asc ? 1 : -1) * (th.dataset.num === '1' ? x - y : x.localeCompare(y));
  Array.from(body.rows).sort((a, b) => cmp(a.cells[col].dataset.sort,
    b.cells[col].dataset.sort)).forEach(r => body.appendChild(r));
});
// Every figure drawn from its JSON data block (the page fetches nothing).
document.querySelectorAll('div.figure').forEach(div => {
  const fig = JSON.parse(document.getElementById(div.id + '-data').textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
});
