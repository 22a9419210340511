from syntropism.cli import app

app(prog_name="syntropism")
