"""kombu-appengine-pullqueue: kombu, a worker and Celery on App Engine pull queues."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="kombu-appengine-pullqueue",
    version="0.1.0",
    description="kombu transport, multi-process worker, Celery support and emulator "
                "for App Engine pull queues (Task Queue REST API v1beta2)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["kombu_appengine", "kombu_appengine.*"]),
    package_data={"kombu_appengine": ["*.json"]},
    python_requires=">=3.9",
    install_requires=[
        "kombu>=5.3",
        "google-api-python-client>=2.0",
        "oauth2client>=4.1",
        "httplib2>=0.19",
        # Reads the emulator's queue.yaml, App Engine's own queue format.
        "PyYAML>=5.4",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            # The end-to-end tests run real Celery workers (tests/test_celery.py).
            "celery>=5.3",
            # The test OAuth server checks service-account JWT signatures.
            "cryptography",
        ],
    },
    entry_points={
        "console_scripts": [
            "pullqueue_emulator = kombu_appengine.emulator.cli:main",
            "pullqueue_worker = kombu_appengine.worker:main",
            "pullqueue_authenticate = kombu_appengine.authenticate:main",
        ],
        "pytest11": [
            "pullqueue_emulator = kombu_appengine.pytest_plugin",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Celery",
        "Topic :: System :: Distributed Computing",
    ],
)
