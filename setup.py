"""eta-tf: ETA-Net long-sequence CTR models on TensorFlow, Beam and TF Serving."""
import setuptools

setuptools.setup(
    name="eta-tf",
    version="0.1.0",
    description="ETA-Net (end-to-end target attention over long user histories) on "
                "TensorFlow/Keras, Apache Beam and TF Serving",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["eta_tf", "eta_tf.*", "pipelines",
                                               "pipelines.*", "serving", "serving.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-recommenders>=0.7.7,<0.8",
        "tensorflow-serving-api>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",
        "apache-beam[tfrecord]>=2.60,<3",
        "numpy>=1.26,<3",
        "absl-py>=2.0,<3",
        "grpcio>=1.60,<2",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7"],
    },
)
