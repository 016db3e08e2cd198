import zipfile

from builder.check import sizes
from builder.cli import main


def make_wheel(tmp_path):
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/bin/big.so", b"\0" * 300_000)          # compresses to almost nothing
        zf.writestr("demo/bin/small", bytes(range(256)) * 40)
        zf.writestr("demo/rocblas/library/k.dat", b"x" * 50_000)
        zf.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    return path


def test_report_orders_by_installed_size_and_groups_folders(tmp_path):
    report = sizes.read_sizes(make_wheel(tmp_path))
    assert [f.name for f in report.largest(2)] == ["demo/bin/big.so", "demo/rocblas/library/k.dat"]
    assert report.installed == 300_000 + 10_240 + 50_000 + len("Name: demo\n")
    big = report.largest(1)[0]
    assert big.compressed < big.installed / 50
    folders = {row[0]: row for row in report.by_folder()}
    assert folders["demo/bin/"][1] == 2 and folders["demo/bin/"][3] == 310_240
    assert folders["demo/rocblas/"][3] == 50_000
    text = sizes.format_report(report, top=2)
    assert "demo/bin/big.so" in text and "demo-1.0.dist-info/METADATA" not in text.split("by folder")[0]


def test_size_report_command(tmp_path, capsys):
    path = make_wheel(tmp_path)
    try:
        main(["size-report", "--top", "1", str(path)])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert f"{path.name}:" in out and "0.3 MB" in out and "demo/bin/big.so" in out
