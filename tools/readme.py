"Write README.md from nbs/index.ipynb: markdown as is, code in python fences, text outputs indented (nbdev-readme needs quarto, which is not installable offline)."
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
nb = json.loads((root/'nbs'/'index.ipynb').read_text())
parts = []
for cell in nb['cells']:
    src = ''.join(cell['source']).strip()
    if cell['cell_type'] == 'markdown': parts.append(src); continue
    if not src or src.startswith('#| hide'): continue
    parts.append(f'```python\n{src}\n```')
    for out in cell.get('outputs', []):
        text = ''.join(out.get('text') or out.get('data', {}).get('text/plain', '')) if out['output_type'] in ('stream', 'execute_result') else ''
        if out['output_type'] == 'stream' and out.get('name') == 'stderr': text = ''
        if text.strip(): parts.append('\n'.join('    ' + l for l in text.rstrip().splitlines()))
(root/'README.md').write_text('\n\n'.join(parts) + '\n')
print(f"wrote {root/'README.md'}", file=sys.stderr)
